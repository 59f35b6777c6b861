"""Comparisons of methods over seeds and test images: scores, paired differences and verdicts.

Every method is trained once per seed and every run is scored on the same test images. Three
kinds of number come out, and each says what it covers:

- **A method's score** is the mean over its seeds of each run's score on the whole test set.
  Its interval (``ci_low``, ``ci_high``) is the percentile-bootstrap interval over *test
  images* of that mean (every seed scored on the same resampled images): it reflects the test
  set's sampling for *these trained networks*, not training randomness. ``sd`` is the spread
  over seeds.
- **The difference Δ from a reference method, with an interval over seeds and images**
  (``delta_ci_low``, ``delta_ci_high``, ``p_value``): a seed-level Welch test extended by the
  test-image sampling variance. For the seeds' scores ``x_ms`` of method ``m`` and ``x_rs`` of
  the reference,

      Δ = mean_s x_ms − mean_s x_rs,
      SE² = var_s(x_ms)/S_m + var_s(x_rs)/S_r + V_images,

  where the first two terms (sample variances over seeds, ``ddof=1``) are training randomness,
  and ``V_images`` is the variance of Δ over image resamples (paired: both methods see the same
  resampled images) *less* the seed-specific part that the seed variances already hold
  (estimated from the per-seed resamples as ``S/(S−1)·(mean_s var(x_s*) − var(mean_s x_s*))``
  per method, the crossed seeds × images design's method of moments; floored at 0). The
  interval is ``Δ ± t_ν·SE`` with Welch–Satterthwaite degrees of freedom ``ν`` (the image term
  counted as known), and ``p_value`` is the two-sided t-test of Δ = 0. It estimates the
  difference in expected score over training runs *and* test images like these; seeds of two
  methods are treated as independent (not paired by seed number). A simulation in the tests
  checks that it covers the true difference at about the nominal rate, where the image-only
  interval does not. It needs **at least two seeds of both methods**; with fewer it is NaN and
  no verdict is given (one trained network per method compares networks, not methods).
- **The image-only Δ interval** (``image_delta_ci_low``, ``image_delta_ci_high``): the paired
  percentile-bootstrap interval over test images of the seed-mean difference, conditional on
  these trained networks (the only interval there is with one seed).

:func:`add_verdicts` turns a table's p-values into *higher* / *lower* / *no clear difference*
with Holm's step-down correction over the comparisons of that table (family-wise error at
``1 − confidence``).

Per-item scores (:func:`compare_scores`, e.g. saliency Dice per image × class, segmentation
Dice per image × structure) are resampled by *image* (a cluster bootstrap: all of an image's
items enter a resample together), so correlated items of one image are not counted as
independent. A run's score is the mean over its defined (finite) items; Δ uses only the items
defined in every seed of *both* methods (``n_paired``), so a method is not rewarded for leaving
hard items undefined (an empty map's HD95).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy import stats

from sibnet.metrics.bootstrap import bootstrap_indices, percentile_interval
from sibnet.metrics.classification import bootstrap_macro_aucs, macro_auc

__all__ = [
    "COMPARISON_COLUMNS",
    "add_verdicts",
    "cluster_bootstrap_means",
    "compare_aucs",
    "compare_scores",
    "holm",
    "seed_level_delta",
]

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
    "delta_se",
    "delta_df",
    "p_value",
    "image_delta_ci_low",
    "image_delta_ci_high",
    "n",
    "n_paired",
)
"""One row per method: score (mean over seeds), its median, its image-bootstrap CI, SD over
seeds; Δ from the reference with its seed-and-image interval, SE, degrees of freedom and
p-value; the image-only Δ interval; ``n`` items (or images) scored and ``n_paired`` items in Δ.
``median``: over seeds for an AUC, over items (seed-averaged) for a per-item score."""

VERDICT_COLUMNS = ("p_holm", "verdict")
"""Columns :func:`add_verdicts` adds."""

NO_SEED_VERDICT = "no verdict (one seed)"
"""The verdict of a comparison without two seeds of both methods."""

NO_INTERVAL_VERDICT = "no verdict (no interval)"
"""The verdict of a comparison with seeds enough but no interval (no bootstrap resamples, or
no item defined for both methods)."""


_REFERENCE_DELTA = {
    "delta": 0.0,
    "ci_low": 0.0,
    "ci_high": 0.0,
    "se": 0.0,
    "df": float("nan"),
    "p": float("nan"),
    "image_low": 0.0,
    "image_high": 0.0,
}
"""The reference's Δ from itself: exactly 0, no test."""


def seed_level_delta(
    points: np.ndarray,
    draws: np.ndarray,
    ref_points: np.ndarray,
    ref_draws: np.ndarray,
    confidence: float,
) -> dict[str, float]:
    """Δ of two methods with its interval over seeds and test images (see the module docstring).

    Args:
        points: ``(S_m,)`` each seed's score of the method on the whole test set.
        draws: ``(R, S_m)`` the same scores on ``R`` image resamples.
        ref_points, ref_draws: the reference method's, ``(S_r,)`` and ``(R, S_r)``, on the
            *same* resamples.
        confidence: interval level.

    Returns:
        ``delta``, ``ci_low``, ``ci_high``, ``se``, ``df``, ``p``, ``image_low``,
        ``image_high``; the interval, SE, df and p are NaN with fewer than two seeds of either
        method, or when a score is undefined.
    """
    points, ref_points = np.asarray(points, float), np.asarray(ref_points, float)
    draws, ref_draws = np.asarray(draws, float), np.asarray(ref_draws, float)
    nan = float("nan")
    delta = float(points.mean() - ref_points.mean()) if len(points) and len(ref_points) else nan
    ok = np.isfinite(draws).all(axis=1) & np.isfinite(ref_draws).all(axis=1)
    differences = draws[ok].mean(axis=1) - ref_draws[ok].mean(axis=1)
    image_low, image_high, _ = percentile_interval(differences, confidence)
    out = {
        "delta": delta,
        "ci_low": nan,
        "ci_high": nan,
        "se": nan,
        "df": nan,
        "p": nan,
        "image_low": image_low,
        "image_high": image_high,
    }
    s_m, s_r = len(points), len(ref_points)
    if s_m < 2 or s_r < 2 or not math.isfinite(delta) or ok.sum() < 2:
        return out
    v_m = float(points.var(ddof=1)) / s_m
    v_r = float(ref_points.var(ddof=1)) / s_r

    def seed_specific(run_draws: np.ndarray) -> float:
        """Per-seed image variance not shared by the seeds: S/(S−1)·(mean var − var of mean)."""
        size = run_draws.shape[1]
        within = run_draws.var(axis=0, ddof=1).mean()
        return float(size / (size - 1) * (within - run_draws.mean(axis=1).var(ddof=1)))

    shared = float(differences.var(ddof=1))
    shared -= seed_specific(draws[ok]) / s_m + seed_specific(ref_draws[ok]) / s_r
    variance = v_m + v_r + max(0.0, shared)
    denominator = v_m**2 / (s_m - 1) + v_r**2 / (s_r - 1)
    df = variance**2 / denominator if denominator > 0 else math.inf
    se = math.sqrt(variance)
    if se == 0.0:
        low = high = delta
        p = 1.0 if delta == 0 else 0.0
    else:
        half = float(stats.t.ppf((1.0 + confidence) / 2.0, df)) * se
        low, high = delta - half, delta + half
        p = float(2.0 * stats.t.sf(abs(delta) / se, df))
    out.update({"ci_low": low, "ci_high": high, "se": se, "df": df, "p": p})
    return out


def holm(p_values: Sequence[float]) -> np.ndarray:
    """Holm's step-down adjusted p-values; NaNs stay NaN and do not count in the family.

    ``p_adj_(k) = max_{j <= k} min(1, (m − j + 1) · p_(j))`` over the ``m`` finite p-values
    sorted ascending (Holm, Scand. J. Statist. 1979); rejecting ``p_adj < α`` controls the
    family-wise error at ``α``.
    """
    p = np.asarray(p_values, dtype=np.float64)
    adjusted = np.full(p.shape, np.nan)
    finite = np.flatnonzero(np.isfinite(p))
    order = finite[np.argsort(p[finite], kind="stable")]
    m = len(order)
    running = 0.0
    for rank, index in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[index]))
        adjusted[index] = running
    return adjusted


def add_verdicts(
    table: pd.DataFrame, *, confidence: float, reference: str, family: pd.Series | None = None
) -> pd.DataFrame:
    """``table`` with ``p_holm`` and ``verdict`` columns: Holm over the rows of ``family``.

    Args:
        table: rows of :data:`COMPARISON_COLUMNS` (one table of the report).
        confidence: the family-wise level is ``1 − confidence``.
        reference: the reference method (its rows get the verdict ``reference``).
        family: bool mask of the rows that are verdicts of this table (default: every row
            but the reference's); other rows get no verdict (empty string).

    Verdicts: ``higher`` / ``lower`` (the adjusted p-value is below ``1 − confidence``: the
    method's score is higher / lower than the reference's), ``no clear difference``,
    :data:`NO_SEED_VERDICT` (fewer than two seeds of the method or of the reference),
    :data:`NO_INTERVAL_VERDICT` (no p-value for another reason: ``bootstrap`` 0, or no item
    defined for both), ``reference``.
    """
    table = table.copy()
    is_reference = table["method"] == reference
    reference_seeds = int(table.loc[is_reference, "n_seeds"].min()) if is_reference.any() else 0
    family = ~is_reference if family is None else (family & ~is_reference)
    table["p_holm"] = np.nan
    table.loc[family, "p_holm"] = holm(table.loc[family, "p_value"].to_numpy(np.float64))
    alpha = 1.0 - confidence

    def verdict(row: pd.Series) -> str:
        if row["method"] == reference:
            return "reference"
        if not family[row.name]:
            return ""
        if not math.isfinite(row["p_holm"]):
            few = min(int(row["n_seeds"]), reference_seeds) < 2
            return NO_SEED_VERDICT if few else NO_INTERVAL_VERDICT
        if row["p_holm"] >= alpha:
            return "no clear difference"
        return "higher" if row["delta"] > 0 else "lower"

    table["verdict"] = [verdict(row) for _, row in table.iterrows()] if len(table) else []
    return table


def _row(
    method: str,
    points: np.ndarray,
    mean_draws: np.ndarray,
    median: float,
    delta: dict[str, float],
    confidence: float,
    n: int,
    n_paired: int,
) -> dict[str, float | int | str]:
    low, high, _ = percentile_interval(mean_draws, confidence)
    return {
        "method": method,
        "n_seeds": len(points),
        "mean": float(points.mean()) if len(points) else float("nan"),
        "median": median,
        "ci_low": low,
        "ci_high": high,
        "sd": float(np.std(points, ddof=1)) if len(points) > 1 else float("nan"),
        "delta": delta["delta"],
        "delta_ci_low": delta["ci_low"],
        "delta_ci_high": delta["ci_high"],
        "delta_se": delta["se"],
        "delta_df": delta["df"],
        "p_value": delta["p"],
        "image_delta_ci_low": delta["image_low"],
        "image_delta_ci_high": delta["image_high"],
        "n": n,
        "n_paired": n_paired,
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
    """Macro AUC of every method (mean over seeds), its CIs and its Δ from ``reference``.

    Image resamples are stratified by label pattern
    (:func:`~sibnet.metrics.classification.bootstrap_macro_aucs`), the same for every run.

    Args:
        probabilities: method → one ``(N, C)`` array per seed, every array over the same ``N``
            test images in the same order.
        targets: ``(N, C)`` 0/1 labels.
        reference: the method the others are compared with (a key of ``probabilities``).

    Returns:
        :data:`COMPARISON_COLUMNS`, one row per method in ``probabilities``' order (``n`` and
        ``n_paired``: images).
    """
    if reference not in probabilities:
        raise ValueError(f"reference method {reference!r} is not among {list(probabilities)}")
    methods = list(probabilities)
    stack = np.stack([p for m in methods for p in probabilities[m]])
    owner = np.array([m for m in methods for _ in probabilities[m]])
    point = np.array([macro_auc(p, targets) for p in stack])
    draws = bootstrap_macro_aucs(stack, targets, resamples=resamples, seed=seed)  # (R, runs)
    rows = []
    for m in methods:
        own = owner == m
        delta = (
            _REFERENCE_DELTA
            if m == reference
            else seed_level_delta(
                point[own],
                draws[:, own],
                point[owner == reference],
                draws[:, owner == reference],
                confidence,
            )
        )
        rows.append(
            _row(
                m,
                point[own],
                draws[:, own].mean(axis=1),
                float(np.median(point[own])),
                delta,
                confidence,
                len(targets),
                len(targets),
            )
        )
    return pd.DataFrame(rows, columns=list(COMPARISON_COLUMNS))


def cluster_bootstrap_means(
    values: np.ndarray, clusters: np.ndarray, *, resamples: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Each run's mean over its finite items, whole and over resamples of clusters (images).

    Args:
        values: ``(runs, items)`` scores, NaN where undefined.
        clusters: ``(items,)`` integer cluster (image) of each item, ``0 .. K−1``.

    Returns:
        ``(points, draws)``: ``(runs,)`` means over finite items and ``(resamples, runs)``
        means over the items of ``K`` clusters drawn with replacement (NaN when a resample
        holds no finite item of a run). Every run sees the same resampled clusters.
    """
    values = np.asarray(values, dtype=np.float64)
    finite = np.isfinite(values)
    k = int(clusters.max()) + 1 if len(clusters) else 0
    sums = np.zeros((len(values), k))
    counts = np.zeros((len(values), k))
    for run in range(len(values)):
        sums[run] = np.bincount(clusters, np.where(finite[run], values[run], 0.0), minlength=k)
        counts[run] = np.bincount(clusters, finite[run].astype(float), minlength=k)
    with np.errstate(invalid="ignore", divide="ignore"):
        points = sums.sum(axis=1) / counts.sum(axis=1)
        draws = np.full((resamples, len(values)), np.nan)
        row = 0
        if k:
            for idx in bootstrap_indices(k, resamples, seed, per_item=2 * len(values)):
                total = sums[:, idx].sum(axis=2)  # (runs, b)
                draws[row : row + len(idx)] = (total / counts[:, idx].sum(axis=2)).T
                row += len(idx)
    return points, draws


def compare_scores(
    rows: pd.DataFrame,
    score: str,
    *,
    keys: Sequence[str],
    reference: str,
    resamples: int,
    confidence: float,
    seed: int,
    cluster: str = "id",
) -> pd.DataFrame:
    """Mean of a per-item score (e.g. saliency Dice per image × class) per method, with CIs.

    A run's score is the mean over its items with a defined (finite) score; a method's score is
    the mean over its seeds. Resamples draw *images* (``cluster``) with replacement, the same
    for every run. Δ from ``reference`` uses only the items defined in every seed of both
    methods (``n_paired``); see the module docstring for its interval.

    Args:
        rows: one row per method × seed × item: columns ``method``, ``seed``, ``keys`` and
            ``score``.
        keys: the columns identifying an item (e.g. ``("id", "class")``); ``cluster`` is one
            of them.
        cluster: the column naming the resampling unit (the image).

    Returns:
        :data:`COMPARISON_COLUMNS`, one row per method in order of first appearance
        (``n``: items with a score defined in some seed).
    """
    if reference not in set(rows["method"]):
        raise ValueError(f"reference method {reference!r} is not among {rows['method'].unique()}")
    if cluster not in keys:
        raise ValueError(f"cluster column {cluster!r} must be one of the keys {list(keys)}")
    methods = list(dict.fromkeys(rows["method"]))
    values = rows.assign(_score=rows[score].astype(np.float64))
    wide = values.groupby([*keys, "method", "seed"], sort=True)["_score"].mean()
    wide = wide.unstack(["method", "seed"])  # (items, runs); NaN where undefined or absent
    runs = {m: [c for c in wide.columns if c[0] == m] for m in methods}
    clusters = pd.factorize(wide.index.get_level_values(cluster), sort=True)[0]
    table = wide.to_numpy().T  # (runs, items)
    column = {c: i for i, c in enumerate(wide.columns)}
    index = {m: [column[c] for c in runs[m]] for m in methods}
    points, draws = cluster_bootstrap_means(table, clusters, resamples=resamples, seed=seed)
    ref = index[reference]
    defined = {m: np.isfinite(table[index[m]]).all(axis=0) for m in methods}
    result = []
    for method in methods:
        own = index[method]
        paired = defined[method] & defined[reference]
        subset = table[:, paired][own + ref]
        pair_points, pair_draws = cluster_bootstrap_means(
            subset, pd.factorize(clusters[paired], sort=True)[0], resamples=resamples, seed=seed
        )
        delta = (
            _REFERENCE_DELTA
            if method == reference
            else seed_level_delta(
                pair_points[: len(own)],
                pair_draws[:, : len(own)],
                pair_points[len(own) :],
                pair_draws[:, len(own) :],
                confidence,
            )
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # an item undefined in every seed
            item_means = np.nanmean(table[own], axis=0)
            median = float(np.nanmedian(item_means)) if np.isfinite(item_means).any() else np.nan
        result.append(
            _row(
                method,
                points[own],
                draws[:, own].mean(axis=1),
                median,
                delta,
                confidence,
                int(np.isfinite(item_means).sum()),
                int(paired.sum()),
            )
        )
    return pd.DataFrame(result, columns=list(COMPARISON_COLUMNS))
