"""Classification metrics: per-class and macro ROC AUC with bootstrap CIs, (balanced) accuracy.

AUC is the Mann–Whitney statistic (ties count one half), computed from average ranks, so it is
exact and vectorises over bootstrap resamples. Multi-class AUC is one-vs-rest per class;
multi-label AUC is per label; the macro AUC is the mean over classes whose test labels contain
both values (a class with only positives or only negatives has no AUC and is left out, as
scikit-learn would refuse it).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.stats import rankdata

__all__ = [
    "accuracy",
    "balanced_accuracy",
    "bootstrap_macro_auc",
    "classification_metrics",
    "macro_auc",
    "per_class_auc",
]


def _auc_from_ranks(scores: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """AUC along the last axis. ``scores``, ``targets``: ``(..., N)``; NaN where undefined."""
    ranks = rankdata(scores, axis=-1)
    positives = targets.sum(axis=-1)
    negatives = targets.shape[-1] - positives
    rank_sum = (ranks * targets).sum(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        auc = (rank_sum - positives * (positives + 1) / 2) / (positives * negatives)
    return np.where((positives > 0) & (negatives > 0), auc, np.nan)


def per_class_auc(probabilities: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """One-vs-rest ROC AUC of each class.

    Args:
        probabilities: ``(N, C)`` scores (probabilities or logits; only their order matters).
        targets: ``(N, C)`` 0/1 labels.

    Returns:
        ``(C,)`` AUCs; NaN for a class whose targets are all 0 or all 1.
    """
    probabilities, targets = _check(probabilities, targets)
    return _auc_from_ranks(probabilities.T, targets.T.astype(np.float64))


def macro_auc(probabilities: np.ndarray, targets: np.ndarray) -> float:
    """Mean of :func:`per_class_auc` over the classes where it is defined (NaN if none)."""
    aucs = per_class_auc(probabilities, targets)
    return float(np.nanmean(aucs)) if np.isfinite(aucs).any() else float("nan")


def bootstrap_macro_auc(
    probabilities: np.ndarray,
    targets: np.ndarray,
    *,
    resamples: int,
    confidence: float,
    seed: int,
) -> tuple[float, float, int]:
    """Percentile bootstrap confidence interval of the macro AUC, resampling images.

    Returns:
        ``(low, high, valid)``: the interval and how many resamples had a defined macro AUC.
        ``(nan, nan, 0)`` when ``resamples`` is 0.
    """
    probabilities, targets = _check(probabilities, targets)
    if resamples == 0:
        return float("nan"), float("nan"), 0
    rng = np.random.default_rng(seed)
    n = len(targets)
    macros = np.empty(resamples)
    chunk = max(1, 2_000_000 // max(1, n * targets.shape[1]))
    for start in range(0, resamples, chunk):
        idx = rng.integers(0, n, size=(min(chunk, resamples - start), n))
        scores = np.moveaxis(probabilities[idx], -1, 1)  # (b, C, n)
        labels = np.moveaxis(targets[idx], -1, 1).astype(np.float64)
        aucs = _auc_from_ranks(scores, labels)  # (b, C)
        defined = np.isfinite(aucs)
        with np.errstate(invalid="ignore"):
            macros[start : start + len(idx)] = np.where(
                defined.any(axis=1), np.nansum(aucs, axis=1) / defined.sum(axis=1), np.nan
            )
    valid = macros[np.isfinite(macros)]
    if len(valid) == 0:
        return float("nan"), float("nan"), 0
    alpha = (1.0 - confidence) / 2.0
    low, high = np.quantile(valid, [alpha, 1.0 - alpha])
    return float(low), float(high), len(valid)


def _predictions(probabilities: np.ndarray, task: str, threshold: float) -> np.ndarray:
    if task == "multiclass":
        return np.eye(probabilities.shape[1], dtype=np.int8)[probabilities.argmax(axis=1)]
    if task == "multilabel":
        return (probabilities >= threshold).astype(np.int8)
    raise ValueError(f"task must be 'multiclass' or 'multilabel', got {task!r}")


def accuracy(
    probabilities: np.ndarray, targets: np.ndarray, task: str, threshold: float = 0.5
) -> float:
    """Multi-class: fraction of images whose arg-max class is right. Multi-label: fraction of
    (image, label) decisions at ``threshold`` that are right."""
    probabilities, targets = _check(probabilities, targets)
    predicted = _predictions(probabilities, task, threshold)
    if task == "multiclass":
        return float((predicted.argmax(1) == targets.argmax(1)).mean())
    return float((predicted == targets).mean())


def balanced_accuracy(
    probabilities: np.ndarray, targets: np.ndarray, task: str, threshold: float = 0.5
) -> float:
    """Multi-class: mean recall over the classes present. Multi-label: mean over labels of
    (sensitivity + specificity) / 2, each over the labels where it is defined."""
    probabilities, targets = _check(probabilities, targets)
    predicted = _predictions(probabilities, task, threshold).astype(bool)
    truth = targets.astype(bool)
    with np.errstate(invalid="ignore", divide="ignore"):
        sensitivity = (predicted & truth).sum(0) / truth.sum(0)
        if task == "multiclass":
            return float(np.nanmean(sensitivity))
        specificity = (~predicted & ~truth).sum(0) / (~truth).sum(0)
    return float(np.nanmean(np.nanmean(np.stack([sensitivity, specificity]), axis=0)))


def classification_metrics(
    probabilities: np.ndarray,
    targets: np.ndarray,
    *,
    task: str,
    classes: list[str],
    resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
    threshold: float = 0.5,
) -> dict[str, Any]:
    """All test metrics of one classifier, as a JSON-ready dictionary.

    Args:
        probabilities: ``(N, C)`` softmax (multi-class) or sigmoid (multi-label) outputs.
        targets: ``(N, C)`` 0/1 labels.
        task: ``"multiclass"`` or ``"multilabel"``.
        classes: the ``C`` class names.
        resamples, confidence, seed: bootstrap settings of the macro-AUC interval.
        threshold: multi-label decision threshold for (balanced) accuracy.
    """
    probabilities, targets = _check(probabilities, targets)
    if len(classes) != targets.shape[1]:
        raise ValueError(f"{len(classes)} class names for {targets.shape[1]} classes")
    aucs = per_class_auc(probabilities, targets)
    low, high, valid = bootstrap_macro_auc(
        probabilities, targets, resamples=resamples, confidence=confidence, seed=seed
    )
    finite = np.isfinite(aucs)
    return {
        "macro_auc": float(np.mean(aucs[finite])) if finite.any() else None,
        "macro_auc_ci": [low, high] if valid else None,
        "confidence": confidence,
        "bootstrap_resamples": valid,
        "per_class_auc": {
            name: (float(auc) if np.isfinite(auc) else None)
            for name, auc in zip(classes, aucs, strict=True)
        },
        "accuracy": accuracy(probabilities, targets, task, threshold),
        "balanced_accuracy": balanced_accuracy(probabilities, targets, task, threshold),
        "n_images": len(targets),
    }


def _check(probabilities: np.ndarray, targets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    probabilities = np.asarray(probabilities, dtype=np.float64)
    targets = np.asarray(targets)
    if probabilities.ndim != 2 or probabilities.shape != targets.shape:
        raise ValueError(
            "probabilities and targets must both have shape (N, C); got "
            f"{probabilities.shape} and {targets.shape}"
        )
    if len(targets) == 0:
        raise ValueError("no images to score")
    if not np.isin(targets, (0, 1)).all():
        raise ValueError("targets must be 0 or 1")
    if not np.isfinite(probabilities).all():
        raise ValueError("probabilities contain NaN or infinity")
    return probabilities, targets.astype(np.int8)
