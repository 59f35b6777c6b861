"""Figures (matplotlib, no display), written atomically as PNGs with deterministic bytes.

- :mod:`sibnet.plots.runs`: figures of one training run, logged to MLflow by ``train`` and
  ``evaluate`` (training curves, ROC curves);
- :mod:`sibnet.plots.report`: the report's figures (AUC against input noise, saliency-score
  distributions, saliency and segmentation overlays, multi-seed training summaries).

Split so that editing a report figure re-runs only the report (see :mod:`sibnet.imports`).
"""

import matplotlib

matplotlib.use("Agg")  # before any submodule imports pyplot
