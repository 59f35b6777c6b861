"""Deterministic, stratified train/val/test splits, by patient where patient ids exist."""

from __future__ import annotations

import logging

import numpy as np

__all__ = ["SPLITS", "SplitError", "stratified_split", "unlabeled_groups"]

log = logging.getLogger(__name__)

SPLITS: tuple[str, ...] = ("train", "val", "test")


class SplitError(ValueError):
    """Too few groups (patients) to give every requested split at least one.

    Attributes:
        groups: the number of groups.
        splits: the splits that each need one.
    """

    def __init__(self, groups: int, splits: tuple[str, ...]) -> None:
        self.groups = groups
        self.splits = splits
        names = ", ".join(splits[:-1]) + f" and {splits[-1]}"
        super().__init__(
            f"{groups} patient(s) cannot fill {names}: each split needs at least one patient"
        )


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
    permuted by a generator seeded with ``seed`` and cut by the fractions (each stratum's
    ``round(groups × fraction)`` for test, then val, the rest train). The result therefore
    depends only on the set of (group, labels) pairs and the seed, not on row order.

    Small datasets: every requested split (train, val, and test when ``test`` > 0) gets at least
    one group. Where rounding per stratum leaves one empty (two strata of 3 patients, 15 %
    each: 0.45 rounds to 0 in both), one group is moved into it from the split that has most
    groups, taken from the stratum furthest below its share of the empty split (then the larger
    stratum, then the first by pattern), deterministically. Splits that rounding already fills
    are exactly as without this rule.

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

    Raises:
        SplitError: fewer groups than requested splits (3 with ``test`` > 0, else 2).
        ValueError: bad shapes or fractions.
    """
    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise ValueError(f"labels must have shape (N, C), got {labels.shape}")
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
    wanted = ("train", "val", "test") if test > 0 else ("train", "val")
    if len(unique_groups) < len(wanted):
        raise SplitError(len(unique_groups), wanted)
    patterns = _group_patterns(labels, inverse, len(unique_groups))
    keys, counts = np.unique(patterns, return_counts=True)
    rare = set(keys[counts < _MIN_STRATUM])
    strata = np.where(np.isin(patterns, list(rare)), "rare", patterns)

    rng = np.random.default_rng(seed)
    order = sorted(set(strata))
    members = {}
    sizes: dict[str, dict[str, int]] = {}
    for stratum in order:
        chosen = np.flatnonzero(strata == stratum)
        members[stratum] = chosen[rng.permutation(len(chosen))]
        n_test = min(round(len(chosen) * test), len(chosen))
        n_val = min(round(len(chosen) * val), len(chosen) - n_test)
        sizes[stratum] = {"test": n_test, "val": n_val, "train": len(chosen) - n_test - n_val}
    _fill_empty(sizes, order, {"train": 1.0 - val - test, "val": val, "test": test}, wanted)

    group_split = np.empty(len(unique_groups), dtype=object)
    for stratum in order:
        chosen, size = members[stratum], sizes[stratum]
        group_split[chosen[: size["test"]]] = "test"
        group_split[chosen[size["test"] : size["test"] + size["val"]]] = "val"
        group_split[chosen[size["test"] + size["val"] :]] = "train"
    return group_split[inverse].astype(str)


_UNLABELED_STREAM = 0x756E6C  # "unl": the draw of unlabeled groups, apart from the split's


def unlabeled_groups(groups: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Which images lose their labels: those of ``fraction`` of the distinct ``groups``
    (patients), drawn by ``seed`` (a stream of its own, not the split's).

    ``round(groups × fraction)`` groups, but at least one when ``fraction`` > 0 and at most all
    but one (a labeled group stays); the groups, in sorted order, are permuted by a generator
    seeded with ``(seed, 0x756E6C)`` and the first taken. The result depends only on the set of
    groups, the fraction and the seed, not on row order.

    Args:
        groups: ``(N,)`` group (patient) ids of the images that may lose their labels.
        fraction: in [0, 1); 0 chooses none.
        seed: the split seed.

    Returns:
        ``(N,)`` bool: true for the images whose labels are withheld.
    """
    groups = np.asarray(groups)
    if not 0 <= fraction < 1:
        raise ValueError(f"fraction must be in [0, 1), got {fraction}")
    unique = np.unique(groups)
    if fraction == 0:
        return np.zeros(len(groups), bool)
    if len(unique) < 2:
        log.warning(
            "unlabeled_fraction %g: the train split has %d patient(s), and one stays labeled: "
            "no image is made unlabeled",
            fraction,
            len(unique),
        )
        return np.zeros(len(groups), bool)
    count = min(max(round(len(unique) * fraction), 1), len(unique) - 1)
    if abs(count / len(unique) - fraction) > 0.05:
        log.warning(
            "unlabeled_fraction %g: %d of the %d train patients are made unlabeled (%.0f%%), "
            "the nearest a whole number of patients allows (at least one, and one stays labeled)",
            fraction,
            count,
            len(unique),
            100 * count / len(unique),
        )
    rng = np.random.default_rng(np.random.SeedSequence([seed, _UNLABELED_STREAM]))
    chosen = unique[rng.permutation(len(unique))[:count]]
    return np.isin(groups, chosen)


def _fill_empty(
    sizes: dict[str, dict[str, int]],
    order: list[str],
    fractions: dict[str, float],
    wanted: tuple[str, ...],
) -> None:
    """Move one group into each split of ``wanted`` that ``sizes`` leaves empty (in place).

    The group comes from the split with most groups (ties: train, val, test), from the stratum
    furthest below its share of the empty split (ties: the larger stratum, then the first of
    ``order``). Needs at least ``len(wanted)`` groups in all, so the donor keeps one.
    """
    for split in ("val", "test", "train"):
        if split not in wanted or sum(s[split] for s in sizes.values()) > 0:
            continue
        donor = max(
            (d for d in wanted if d != split),
            key=lambda d: (sum(s[d] for s in sizes.values()), -wanted.index(d)),
        )
        stratum = max(
            (name for name in order if sizes[name][donor] > 0),
            key=lambda name: (
                sum(sizes[name].values()) * fractions[split] - sizes[name][split],
                sum(sizes[name].values()),
                -order.index(name),
            ),
        )
        sizes[stratum][donor] -= 1
        sizes[stratum][split] += 1
