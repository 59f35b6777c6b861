"""Figures of one training run, logged as MLflow artifacts: training curves and ROC curves."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from sibnet.plots.common import save_figure

__all__ = ["plot_roc", "plot_training_curves", "roc_curve"]


def plot_training_curves(history: pd.DataFrame, path: str | Path, title: str) -> None:
    """Loss (train, val) and validation macro AUC against epoch, from a ``history.csv`` frame."""
    figure, (left, right) = plt.subplots(1, 2, figsize=(9, 3.5))
    left.plot(history["epoch"], history["train_loss"], marker="o", label="train")
    left.plot(history["epoch"], history["val_loss"], marker="o", label="val")
    left.set(xlabel="epoch", ylabel="loss", title="loss")
    left.legend()
    right.plot(history["epoch"], history["val_auc"], marker="o", color="tab:green")
    right.set(xlabel="epoch", ylabel="macro AUC", title="validation macro AUC")
    figure.suptitle(title)
    save_figure(figure, path)


def roc_curve(scores: np.ndarray, targets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """False- and true-positive rates at every distinct threshold.

    Args:
        scores: ``(N,)`` scores.
        targets: ``(N,)`` 0/1 labels.
    """
    order = np.argsort(-scores, kind="stable")
    scores, targets = scores[order], targets[order].astype(bool)
    distinct = np.r_[np.flatnonzero(np.diff(scores)), len(scores) - 1]
    tps = np.cumsum(targets)[distinct]
    fps = (distinct + 1) - tps
    tpr = np.r_[0.0, tps / max(1, targets.sum())]
    fpr = np.r_[0.0, fps / max(1, (~targets).sum())]
    return fpr, tpr


def plot_roc(
    probabilities: np.ndarray,
    targets: np.ndarray,
    classes: list[str],
    aucs: dict[str, float | None],
    path: str | Path,
    title: str,
) -> None:
    """One-vs-rest ROC curve of every class. ``probabilities``, ``targets``: ``(N, C)``."""
    figure, axis = plt.subplots(figsize=(4.5, 4.5))
    for index, name in enumerate(classes):
        column = targets[:, index]
        if column.min() == column.max():
            continue
        fpr, tpr = roc_curve(probabilities[:, index], column)
        auc = aucs.get(name)
        axis.plot(fpr, tpr, label=f"{name} ({auc:.3f})" if auc is not None else name)
    axis.plot([0, 1], [0, 1], color="grey", linestyle=":")
    axis.set(xlabel="false-positive rate", ylabel="true-positive rate", title=title)
    axis.legend(fontsize="small", loc="lower right")
    save_figure(figure, path)
