"""Classification metrics: per-class and macro ROC AUC with bootstrap CIs, (balanced) accuracy.

AUC is the Mann–Whitney statistic (ties count one half), computed from average ranks, so it is
exact and vectorises over bootstrap resamples. Multi-class AUC is one-vs-rest per class;
multi-label AUC is per label; the macro AUC is the mean over classes whose test labels contain
both values (a class with only positives or only negatives has no AUC and is left out, as
scikit-learn would refuse it).

Unknown labels (-1), see :mod:`sibnet.data.prepared`, mark a label of an image as unknown (the
CheXpert "U-Ignore" policy; multi-label train and val splits only). :func:`per_class_auc` and
:func:`macro_auc` (used on validation predictions) accept them: each class's AUC is computed over
the images whose label of that class is known. Every other function here scores the test split,
whose labels are always 0/1, and refuses -1.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from sibnet.metrics.bootstrap import bootstrap_indices, percentile_interval

__all__ = [
    "accuracy",
    "average_ranks",
    "balanced_accuracy",
    "bootstrap_macro_auc",
    "bootstrap_macro_aucs",
    "classification_metrics",
    "decisions",
    "macro_auc",
    "per_class_auc",
]


def average_ranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks along the last axis, tied values sharing the mean of their ranks
    (``scipy.stats.rankdata(values, axis=-1)``, bit for bit; NaN anywhere in a row makes the
    row's ranks NaN, as there). NumPy only, so that the stages that score need not import
    SciPy's statistics module (its cost: ``benchmarks/README.md``, start-up).

    Args:
        values: ``(..., N)``.

    Returns:
        ``(..., N)`` float64 ranks in [1, N].
    """
    values = np.asarray(values)
    n = values.shape[-1]
    order = np.argsort(values, axis=-1, kind="stable")
    ordered = np.take_along_axis(values, order, axis=-1)
    starts = np.ones(ordered.shape, dtype=bool)  # first of a run of equal values
    starts[..., 1:] = ordered[..., 1:] != ordered[..., :-1]
    ends = np.ones(ordered.shape, dtype=bool)  # last of a run
    ends[..., :-1] = starts[..., 1:]
    position = np.arange(n)
    first = np.maximum.accumulate(np.where(starts, position, 0), axis=-1)
    last = np.flip(
        np.minimum.accumulate(np.flip(np.where(ends, position, n - 1), axis=-1), axis=-1), axis=-1
    )
    ranks = np.empty(values.shape, dtype=np.float64)
    np.put_along_axis(ranks, order, (first + last) / 2 + 1, axis=-1)
    if np.issubdtype(values.dtype, np.floating):
        ranks[np.isnan(values).any(axis=-1)] = np.nan
    return ranks


def _auc_from_ranks(scores: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """AUC along the last axis. ``scores``, ``targets``: ``(..., N)``; NaN where undefined."""
    ranks = average_ranks(scores)
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
        targets: ``(N, C)`` 0/1 labels, or -1 where unknown: each class is then scored on the
            images whose label of that class is known (ranked among themselves).

    Returns:
        ``(C,)`` AUCs; NaN for a class whose known targets are all 0 or all 1 (or none).
    """
    probabilities, targets = _check(probabilities, targets, allow_unknown=True)
    known = targets >= 0
    if known.all():
        return _auc_from_ranks(probabilities.T, targets.T.astype(np.float64))
    return np.array(
        [
            _auc_from_ranks(scores[mask], labels[mask].astype(np.float64))
            for scores, labels, mask in zip(probabilities.T, targets.T, known.T, strict=True)
        ],
        dtype=np.float64,
    )


def macro_auc(probabilities: np.ndarray, targets: np.ndarray) -> float:
    """Mean of :func:`per_class_auc` over the classes where it is defined (NaN if none).

    ``targets`` may contain unknown labels (-1), as :func:`per_class_auc` allows.
    """
    aucs = per_class_auc(probabilities, targets)
    return float(np.nanmean(aucs)) if np.isfinite(aucs).any() else float("nan")


def bootstrap_macro_aucs(
    probabilities: np.ndarray, targets: np.ndarray, *, resamples: int, seed: int
) -> np.ndarray:
    """Macro AUC of several models on the same bootstrap resamples of the test images.

    Args:
        probabilities: ``(M, N, C)`` scores of ``M`` models (seeds, methods) on the same ``N``
            images, or ``(N, C)`` for one model.
        targets: ``(N, C)`` 0/1 labels.
        resamples, seed: see :mod:`sibnet.metrics.bootstrap`.

    Returns:
        ``(resamples, M)`` macro AUCs (``(resamples, 1)`` for one model). Linear combinations
        along ``M`` (a mean over seeds, a difference between methods) are paired: every model
        sees the same resampled images.

    Resampling is stratified by label pattern (each distinct row of ``targets``; for a
    multi-class task, the class): every resample keeps each class's numbers of positives and
    negatives, so every class with an AUC on the test set has one in every resample and the
    macro mean always averages the same classes (an unstratified resample of a rare label can
    draw no positive and silently change the estimand).
    """
    stack = np.asarray(probabilities, dtype=np.float64)
    stack = stack[None] if stack.ndim == 2 else stack
    if stack.ndim != 3:
        raise ValueError(f"probabilities must have shape (M, N, C) or (N, C), got {stack.shape}")
    for scores in stack:
        _check(scores, targets)
    targets = np.asarray(targets, dtype=np.float64)
    models, n, classes = stack.shape
    out = np.empty((resamples, models))
    row = 0
    strata = np.unique(targets, axis=0, return_inverse=True)[1].reshape(n)
    for idx in bootstrap_indices(n, resamples, seed, per_item=models * classes, strata=strata):
        scores = np.moveaxis(stack[:, idx], -1, 2)  # (M, b, C, n)
        labels = np.moveaxis(targets[idx], -1, 1)  # (b, C, n)
        aucs = _auc_from_ranks(scores, labels[None])  # (M, b, C)
        defined = np.isfinite(aucs)
        with np.errstate(invalid="ignore"):
            macros = np.where(
                defined.any(axis=2), np.nansum(aucs, axis=2) / defined.sum(axis=2), np.nan
            )
        out[row : row + len(idx)] = macros.T
        row += len(idx)
    return out


def bootstrap_macro_auc(
    probabilities: np.ndarray,
    targets: np.ndarray,
    *,
    resamples: int,
    confidence: float,
    seed: int,
) -> tuple[float, float, int]:
    """Percentile bootstrap confidence interval of the macro AUC, resampling images.

    Args:
        probabilities: ``(N, C)`` scores of one model, or ``(M, N, C)`` of several; then the
            interval is that of their mean macro AUC (paired resamples).
        targets: ``(N, C)`` 0/1 labels.

    Returns:
        ``(low, high, valid)``: the interval and how many resamples had a defined macro AUC.
        ``(nan, nan, 0)`` when ``resamples`` is 0.
    """
    if resamples == 0:
        return float("nan"), float("nan"), 0
    macros = bootstrap_macro_aucs(probabilities, targets, resamples=resamples, seed=seed)
    return percentile_interval(macros.mean(axis=1), confidence)


def decisions(probabilities: np.ndarray, task: str, threshold: float = 0.5) -> np.ndarray:
    """``(N, C)`` int8 0/1 decisions from ``(N, C)`` scores: the arg-max class (multi-class) or
    every label with probability ≥ ``threshold`` (multi-label)."""
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
    predicted = decisions(probabilities, task, threshold)
    if task == "multiclass":
        return float((predicted.argmax(1) == targets.argmax(1)).mean())
    return float((predicted == targets).mean())


def balanced_accuracy(
    probabilities: np.ndarray, targets: np.ndarray, task: str, threshold: float = 0.5
) -> float:
    """Multi-class: mean recall over the classes present. Multi-label: mean over labels of
    (sensitivity + specificity) / 2, each over the labels where it is defined."""
    probabilities, targets = _check(probabilities, targets)
    predicted = decisions(probabilities, task, threshold).astype(bool)
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


def _check(
    probabilities: np.ndarray, targets: np.ndarray, *, allow_unknown: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Validate ``(N, C)`` scores and labels; return them as float64 and int8.

    ``allow_unknown`` admits unknown labels (-1) besides 0/1.
    """
    probabilities = np.asarray(probabilities, dtype=np.float64)
    targets = np.asarray(targets)
    if probabilities.ndim != 2 or probabilities.shape != targets.shape:
        raise ValueError(
            "probabilities and targets must both have shape (N, C); got "
            f"{probabilities.shape} and {targets.shape}"
        )
    if len(targets) == 0:
        raise ValueError("no images to score")
    if allow_unknown:
        if not np.isin(targets, (-1, 0, 1)).all():
            raise ValueError("targets must be 0 or 1, or -1 for unknown labels")
    elif not np.isin(targets, (0, 1)).all():
        message = "targets must be 0 or 1"
        if np.isin(targets, (-1, 0, 1)).all():
            message += (
                "; unknown labels (-1) are not allowed here (test-split metrics need every label)"
            )
        raise ValueError(message)
    if not np.isfinite(probabilities).all():
        raise ValueError("probabilities contain NaN or infinity")
    return probabilities, targets.astype(np.int8)
