"""Deterministic, stratified train/val/test splits, by patient where patient ids exist."""

from __future__ import annotations

import numpy as np

__all__ = ["SPLITS", "stratified_split"]

SPLITS: tuple[str, ...] = ("train", "val", "test")

_MIN_STRATUM = 3
"""Label patterns held by fewer patients than this are pooled into one stratum."""


def _group_patterns(labels: np.ndarray, inverse: np.ndarray, n_groups: int) -> np.ndarray:
    """Label pattern of each group: the union (logical OR) of its images' positive labels
    (``== 1``; unknown labels, -1, count as not positive), as strings."""
    union = np.zeros((n_groups, labels.shape[1]), dtype=bool)
    np.logical_or.at(union, inverse, labels == 1)
    return np.array(["".join("1" if v else "0" for v in row) for row in union])


def stratified_split(
    labels: np.ndarray,
    *,
    val: float,
    test: float,
    seed: int,
    groups: np.ndarray | None = None,
) -> np.ndarray:
    """Assign every image to ``train``, ``val`` or ``test`` (only ``train`` or ``val`` when
    ``test`` is 0).

    Groups (patients) are never divided between splits; each group is stratified by the pattern
    of positive labels its images carry (one-hot for multi-class, multi-hot for multi-label;
    unknown labels, -1, see :mod:`sibnet.data.prepared`, count as not positive), and label
    patterns too rare to divide are pooled. Within each stratum the groups, in sorted order, are
    permuted by a generator seeded with ``seed`` and cut by the fractions. The result therefore
    depends only on the set of (group, labels) pairs and the seed, not on row order.

    Args:
        labels: ``(N, C)`` labels: 0/1, or -1 for unknown (treated as 0 for stratification).
        val: fraction of groups for validation, in (0, 1).
        test: fraction of groups for test, in [0, 1), with ``val + test < 1``; 0 assigns no
            image to ``test`` (a dataset whose test split comes from elsewhere).
        seed: the split seed.
        groups: ``(N,)`` patient ids (any sortable values); ``None`` makes every image its own
            group.

    Returns:
        ``(N,)`` array of split names.
    """
    labels = np.asarray(labels)
    if labels.ndim != 2 or len(labels) == 0:
        raise ValueError(f"labels must have shape (N, C) with N > 0, got {labels.shape}")
    if not (0 < val < 1 and 0 <= test < 1 and val + test < 1):
        raise ValueError(
            f"need 0 < val < 1, 0 <= test < 1 and val + test < 1; got val={val}, test={test}"
        )
    if groups is None:
        groups = np.arange(len(labels))
    groups = np.asarray(groups)
    if groups.shape != (len(labels),):
        raise ValueError(f"groups must have shape ({len(labels)},), got {groups.shape}")

    unique_groups, inverse = np.unique(groups, return_inverse=True)
    patterns = _group_patterns(labels, inverse, len(unique_groups))
    keys, counts = np.unique(patterns, return_counts=True)
    rare = set(keys[counts < _MIN_STRATUM])
    strata = np.where(np.isin(patterns, list(rare)), "rare", patterns)

    rng = np.random.default_rng(seed)
    group_split = np.empty(len(unique_groups), dtype=object)
    for stratum in sorted(set(strata)):
        members = np.flatnonzero(strata == stratum)
        members = members[rng.permutation(len(members))]
        n_test = round(len(members) * test)
        n_val = round(len(members) * val)
        group_split[members[:n_test]] = "test"
        group_split[members[n_test : n_test + n_val]] = "val"
        group_split[members[n_test + n_val :]] = "train"
    return group_split[inverse].astype(str)
