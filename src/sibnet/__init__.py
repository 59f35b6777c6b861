"""sibnet: a reproducible, auditable pipeline for interpretability-guided (SIBnet) training of
medical image classifiers (Mahapatra, Poellinger & Reyes, Medical Image Analysis 81, 2022)."""

__version__ = "0.1.0"
