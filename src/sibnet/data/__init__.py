"""Datasets: the built-in phantom, adapters for real sources, the prepared layout, splits."""
