from __future__ import annotations

import numpy as np
import pytest

from sibnet.data.splits import SplitError, stratified_split


def _labels(n: int, classes: int, seed: int = 0) -> np.ndarray:
    return np.eye(classes, dtype=np.int8)[np.random.default_rng(seed).integers(0, classes, n)]


def test_fractions_and_stratification() -> None:
    labels = _labels(2000, 5)
    split = stratified_split(labels, val=0.15, test=0.2, seed=0)
    assert set(split) == {"train", "val", "test"}
    assert abs((split == "test").mean() - 0.2) < 0.01
    assert abs((split == "val").mean() - 0.15) < 0.01
    for c in range(5):
        in_class = labels[:, c] == 1
        assert abs((split[in_class] == "test").mean() - 0.2) < 0.02


def test_deterministic_and_order_independent() -> None:
    labels = _labels(500, 4)
    groups = np.arange(500)
    a = stratified_split(labels, val=0.1, test=0.2, seed=7, groups=groups)
    assert np.array_equal(a, stratified_split(labels, val=0.1, test=0.2, seed=7, groups=groups))
    order = np.random.default_rng(1).permutation(500)
    b = stratified_split(labels[order], val=0.1, test=0.2, seed=7, groups=groups[order])
    assert np.array_equal(a[order], b)
    assert not np.array_equal(a, stratified_split(labels, val=0.1, test=0.2, seed=8))


def test_patients_are_never_divided() -> None:
    rng = np.random.default_rng(0)
    groups = rng.integers(0, 150, size=600)
    labels = _labels(600, 3)
    split = stratified_split(labels, val=0.2, test=0.2, seed=0, groups=groups)
    for patient in np.unique(groups):
        assert len(set(split[groups == patient])) == 1


def test_multilabel_patterns_including_rare_ones() -> None:
    labels = (np.random.default_rng(0).random((300, 5)) < 0.3).astype(np.int8)
    split = stratified_split(labels, val=0.15, test=0.15, seed=0)
    assert len(split) == 300 and set(split) <= {"train", "val", "test"}


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"val": 0.5, "test": 0.5}, "val \\+ test < 1"),
        ({"val": 0.0, "test": 0.2}, "0 < val"),
        ({"val": 0.1, "test": 0.2, "groups": np.arange(3)}, "groups must have shape"),
    ],
)
def test_bad_arguments(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        stratified_split(_labels(10, 2), seed=0, **kwargs)


def test_unknown_labels_count_as_negative_for_strata() -> None:
    rng = np.random.default_rng(3)
    labels = (rng.random((400, 4)) < 0.3).astype(np.int8)
    groups = rng.integers(0, 200, size=400)
    unknown = np.where((labels == 0) & (rng.random(labels.shape) < 0.5), -1, labels)
    unknown = unknown.astype(np.int8)
    for test in (0.2, 0.0):
        expected = stratified_split(labels, val=0.15, test=test, seed=4, groups=groups)
        actual = stratified_split(unknown, val=0.15, test=test, seed=4, groups=groups)
        assert np.array_equal(expected, actual)


def test_no_test_split() -> None:
    rng = np.random.default_rng(0)
    groups = rng.integers(0, 1000, size=3000)
    labels = _labels(3000, 4)
    labels[rng.random(3000) < 0.1, 1] = -1
    split = stratified_split(labels, val=0.2, test=0.0, seed=0, groups=groups)
    assert set(split) == {"train", "val"}
    for patient in np.unique(groups):
        assert len(set(split[groups == patient])) == 1
    patients_in_val = np.unique(groups[split == "val"])
    assert abs(len(patients_in_val) / len(np.unique(groups)) - 0.2) < 0.01


@pytest.mark.parametrize(("val", "test"), [(0.1, -0.1), (0.1, 1.0), (0.1, 0.9), (1.0, 0.0)])
def test_bad_fractions(val: float, test: float) -> None:
    with pytest.raises(ValueError, match="0 <= test < 1"):
        stratified_split(_labels(10, 2), val=val, test=test, seed=0)


def test_small_strata_still_fill_every_split() -> None:
    """Two strata of 3 patients at 15 %: each rounds to 0 val and 0 test, yet val and test get
    one patient each (from the larger share, deterministically, whatever the row order)."""
    labels = np.array([[1, 0]] * 3 + [[0, 1]] * 3, dtype=np.int8)
    groups = np.array(["p0", "p1", "p2", "p3", "p4", "p5"])
    split = stratified_split(labels, val=0.15, test=0.15, seed=0, groups=groups)
    assert sorted(split.tolist()) == ["test", "train", "train", "train", "train", "val"]
    order = np.array([5, 2, 4, 0, 3, 1])
    again = stratified_split(labels[order], val=0.15, test=0.15, seed=0, groups=groups[order])
    assert np.array_equal(again, split[order])
    for n, test in ((3, 0.15), (2, 0.0)):
        split = stratified_split(_labels(n, 2), val=0.1, test=test, seed=1)
        assert len(set(split)) == n  # one each of train, val (and test)


def test_splits_that_rounding_fills_are_unchanged_by_the_top_up() -> None:
    """Only an empty split is topped up: where rounding per stratum already gives every split a
    patient, the split is the plain per-stratum cut (here recomputed by hand)."""
    labels = _labels(40, 2, seed=5)
    split = stratified_split(labels, val=0.2, test=0.2, seed=3)
    rng = np.random.default_rng(3)
    expected = np.empty(40, dtype=object)
    for c in sorted({"10", "01"}):
        members = np.flatnonzero((labels.astype(str) == np.array(list(c))).all(1))
        members = members[rng.permutation(len(members))]
        n_test, n_val = round(len(members) * 0.2), round(len(members) * 0.2)
        expected[members[:n_test]] = "test"
        expected[members[n_test : n_test + n_val]] = "val"
        expected[members[n_test + n_val :]] = "train"
    assert split.tolist() == expected.tolist()


@pytest.mark.parametrize(
    ("groups", "test", "message"), [(2, 0.2, "train, val and test"), (1, 0.0, "train and val")]
)
def test_too_few_groups(groups: int, test: float, message: str) -> None:
    with pytest.raises(
        SplitError, match=f"{groups} patient\\(s\\) cannot fill {message}"
    ) as caught:
        stratified_split(_labels(4, 2), val=0.2, test=test, seed=0, groups=np.arange(4) % groups)
    assert caught.value.groups == groups
