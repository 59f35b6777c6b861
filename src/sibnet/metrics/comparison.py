"""Comparisons of methods over seeds, with paired bootstrap intervals over test images.

Every method is trained once per seed and every run is scored on the same test images. A
method's score is the mean over its seeds; its interval is the percentile-bootstrap interval of
that mean, every seed scored on the *same* resampled images; its difference (Δ) from a reference
method is paired the same way. The interval therefore reflects the test set's sampling; the
spread over seeds (training randomness) is reported beside it as a standard deviation.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
import pandas as pd

from sibnet.metrics.bootstrap import bootstrap_indices, percentile_interval
from sibnet.metrics.classification import bootstrap_macro_aucs, macro_auc

__all__ = ["COMPARISON_COLUMNS", "compare_aucs", "compare_scores"]

COMPARISON_COLUMNS = (
    "method",
    "n_seeds",
    "mean",
    "median",
    "ci_low",
    "ci_high",
    "sd",
    "delta",
    "delta_ci_low",
    "delta_ci_high",
    "n",
)
"""One row per method: score (mean over seeds), its median, its CI, SD over seeds, Δ from the
reference. ``median``: over seeds for an AUC, over items (seed-averaged) for a per-item score."""


def _row(
    method: str,
    seed_points: np.ndarray,
    mean: float,
    median: float,
    draws: np.ndarray,
    ref_mean: float,
    ref_draws: np.ndarray,
    confidence: float,
    n: int,
) -> dict[str, float | int | str]:
    """One comparison row; ``draws`` and ``ref_draws`` ``(R,)`` come from the same resamples."""
    low, high, _ = percentile_interval(draws, confidence)
    d_low, d_high, _ = percentile_interval(draws - ref_draws, confidence)
    return {
        "method": method,
        "n_seeds": len(seed_points),
        "mean": mean,
        "median": median,
        "ci_low": low,
        "ci_high": high,
        "sd": float(np.std(seed_points, ddof=1)) if len(seed_points) > 1 else float("nan"),
        "delta": mean - ref_mean,
        "delta_ci_low": d_low,
        "delta_ci_high": d_high,
        "n": n,
    }


def compare_aucs(
    probabilities: dict[str, Sequence[np.ndarray]],
    targets: np.ndarray,
    *,
    reference: str,
    resamples: int,
    confidence: float,
    seed: int,
) -> pd.DataFrame:
    """Macro AUC of every method (mean over seeds), its CI and its Δ from ``reference``.

    Args:
        probabilities: method → one ``(N, C)`` array per seed, every array over the same ``N``
            test images in the same order.
        targets: ``(N, C)`` 0/1 labels.
        reference: the method the others are compared with (a key of ``probabilities``).

    Returns:
        :data:`COMPARISON_COLUMNS`, one row per method in ``probabilities``' order (``n``: images).
    """
    if reference not in probabilities:
        raise ValueError(f"reference method {reference!r} is not among {list(probabilities)}")
    methods = list(probabilities)
    stack = np.stack([p for m in methods for p in probabilities[m]])
    owner = np.array([m for m in methods for _ in probabilities[m]])
    point = np.array([macro_auc(p, targets) for p in stack])
    draws = bootstrap_macro_aucs(stack, targets, resamples=resamples, seed=seed)  # (R, runs)
    mean_draws = {m: draws[:, owner == m].mean(axis=1) for m in methods}
    means = {m: float(point[owner == m].mean()) for m in methods}
    return pd.DataFrame(
        [
            _row(
                m,
                point[owner == m],
                means[m],
                float(np.median(point[owner == m])),
                mean_draws[m],
                means[reference],
                mean_draws[reference],
                confidence,
                len(targets),
            )
            for m in methods
        ],
        columns=list(COMPARISON_COLUMNS),
    )


def compare_scores(
    rows: pd.DataFrame,
    score: str,
    *,
    keys: Sequence[str],
    reference: str,
    resamples: int,
    confidence: float,
    seed: int,
) -> pd.DataFrame:
    """Mean of a per-item score (e.g. saliency Dice per image × class) per method, with CIs.

    Each item's score is first averaged over the method's seeds (NaNs — undefined scores — left
    out). A method's score is the mean over the items it defines; the interval resamples items
    (the same resampled items for every method, so Δ from ``reference`` is paired).

    Args:
        rows: one row per method × seed × item: columns ``method``, ``seed``, ``keys`` and
            ``score``.
        keys: the columns identifying an item (e.g. ``("id", "class")``).

    Returns:
        :data:`COMPARISON_COLUMNS`, one row per method in order of first appearance
        (``n``: items with a defined score).
    """
    if reference not in set(rows["method"]):
        raise ValueError(f"reference method {reference!r} is not among {rows['method'].unique()}")
    methods = list(dict.fromkeys(rows["method"]))
    values = rows.assign(_score=rows[score].astype(np.float64))
    items = values.groupby(["method", *keys], sort=True)["_score"].mean().unstack("method")
    table = items[methods].to_numpy()  # (items, methods); NaN where undefined
    draws = np.full((resamples, len(methods)), np.nan)
    row = 0
    for idx in bootstrap_indices(len(table), resamples, seed, per_item=len(methods)):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # a resample with no defined item
            draws[row : row + len(idx)] = np.nanmean(table[idx], axis=1)
        row += len(idx)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        means = np.nanmean(table, axis=0)
        medians = np.nanmedian(table, axis=0)
    ref = methods.index(reference)
    result = []
    for column, method in enumerate(methods):
        seed_points = values[values["method"] == method].groupby("seed")["_score"].mean()
        result.append(
            _row(
                method,
                seed_points.to_numpy(),
                float(means[column]),
                float(medians[column]),
                draws[:, column],
                float(means[ref]),
                draws[:, ref],
                confidence,
                int(np.isfinite(table[:, column]).sum()),
            )
        )
    return pd.DataFrame(result, columns=list(COMPARISON_COLUMNS))
