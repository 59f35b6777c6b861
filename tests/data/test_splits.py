from __future__ import annotations

import numpy as np
import pytest

from sibnet.data.splits import stratified_split


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
