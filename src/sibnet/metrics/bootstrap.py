"""Percentile bootstrap over test images, shared by every scoring stage and the report.

Every image-level interval in sibnet resamples *test images* with replacement (``resamples``
times, from a generator seeded by ``seed``) and takes the ``(1 - confidence) / 2`` and
``(1 + confidence) / 2`` quantiles of the statistic over the resamples where it is defined.
With ``strata`` (e.g. the label pattern of each image, for AUCs) images are resampled within
each stratum, so every resample keeps each stratum's size: a class cannot lose all its
positives or negatives. The unit resampled is an image: several scores of one image (two
lungs, several classes) are resampled together (a cluster bootstrap, see
:mod:`sibnet.metrics.comparison`).
Statistics of several models scored on the same images (several seeds, or two methods) are
computed on the *same* resampled images, so a mean over seeds or a paired difference between
methods gets an interval that accounts for the test set's sampling only once.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

__all__ = [
    "bootstrap_indices",
    "bootstrap_mean",
    "bootstrap_means",
    "percentile_interval",
    "summarise",
]


def bootstrap_indices(
    n: int,
    resamples: int,
    seed: int,
    *,
    chunk_elements: int = 2_000_000,
    per_item: int = 1,
    strata: np.ndarray | None = None,
) -> Iterator[np.ndarray]:
    """Resampled index sets, in chunks: ``(b, n)`` int arrays, ``resamples`` rows in all.

    ``chunk_elements / per_item`` bounds the number of indices per chunk (``per_item``: the
    values the caller gathers per index), so memory stays flat for any ``resamples``.

    Args:
        strata: optional ``(n,)`` stratum label of each index; each resample then draws, for
            every stratum, as many indices as it has, from that stratum only (the columns of a
            row are grouped by stratum, in order of the sorted labels).
    """
    rng = np.random.default_rng(seed)
    chunk = max(1, chunk_elements // max(1, n * per_item))
    groups = None
    if strata is not None:
        strata = np.asarray(strata)
        if strata.shape != (n,):
            raise ValueError(f"strata must have shape ({n},), got {strata.shape}")
        groups = [np.flatnonzero(strata == label) for label in np.unique(strata)]
    for start in range(0, resamples, chunk):
        size = min(chunk, resamples - start)
        if groups is None:
            yield rng.integers(0, n, size=(size, n))
        else:
            yield np.concatenate(
                [
                    members[rng.integers(0, len(members), size=(size, len(members)))]
                    for members in groups
                ],
                axis=1,
            )


def percentile_interval(values: np.ndarray, confidence: float) -> tuple[float, float, int]:
    """``(low, high, valid)``: the percentile interval of the finite ``values`` ``(R,)``.

    ``(nan, nan, 0)`` when no value is finite.
    """
    values = np.asarray(values, dtype=np.float64)
    valid = values[np.isfinite(values)]
    if len(valid) == 0:
        return float("nan"), float("nan"), 0
    alpha = (1.0 - confidence) / 2.0
    low, high = np.quantile(valid, [alpha, 1.0 - alpha])
    return float(low), float(high), len(valid)


def bootstrap_means(values: np.ndarray, resamples: int, seed: int) -> np.ndarray:
    """``(resamples,)`` means of ``values`` ``(N,)`` over resamples; empty if there is nothing."""
    values = np.asarray(values, dtype=np.float64)
    if len(values) == 0 or resamples == 0:
        return np.empty(0)
    return np.concatenate(
        [values[idx].mean(axis=1) for idx in bootstrap_indices(len(values), resamples, seed)]
    )


def bootstrap_mean(
    values: np.ndarray, *, resamples: int, confidence: float, seed: int
) -> tuple[float, float, int]:
    """Percentile bootstrap interval of the mean of ``values`` ``(N,)``, NaNs left out.

    ``(nan, nan, 0)`` when ``resamples`` is 0 or no value is finite.
    """
    values = np.asarray(values, dtype=np.float64)
    return percentile_interval(
        bootstrap_means(values[np.isfinite(values)], resamples, seed), confidence
    )


def summarise(
    values: np.ndarray, *, resamples: int, confidence: float, seed: int
) -> dict[str, float | int | None]:
    """Mean, median and bootstrap CI of the mean of ``values`` ``(N,)``; NaNs are counted apart.

    Returns:
        ``mean``, ``median``, ``ci_low``, ``ci_high`` (``None`` where undefined), ``n`` (finite
        values) and ``n_undefined`` (NaNs).
    """
    values = np.asarray(values, dtype=np.float64)
    finite = values[np.isfinite(values)]
    low, high, valid = bootstrap_mean(finite, resamples=resamples, confidence=confidence, seed=seed)

    def number(value: float) -> float | None:
        return float(value) if np.isfinite(value) else None

    return {
        "mean": number(finite.mean()) if len(finite) else None,
        "median": number(np.median(finite)) if len(finite) else None,
        "ci_low": number(low) if valid else None,
        "ci_high": number(high) if valid else None,
        "n": len(finite),
        "n_undefined": int(len(values) - len(finite)),
    }
