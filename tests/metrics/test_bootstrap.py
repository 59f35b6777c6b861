"""Shared percentile bootstrap: intervals, summaries, paired macro AUCs."""

from __future__ import annotations

import numpy as np
import pytest

from sibnet.metrics.bootstrap import bootstrap_mean, percentile_interval, summarise
from sibnet.metrics.classification import bootstrap_macro_auc, bootstrap_macro_aucs, macro_auc


def _scores(seed: int, n: int = 200, classes: int = 3, skill: float = 1.0):
    rng = np.random.default_rng(seed)
    targets = np.eye(classes, dtype=np.int8)[rng.integers(0, classes, n)]
    return rng.normal(size=(n, classes)) + skill * targets, targets


def test_percentile_interval_ignores_nans() -> None:
    values = np.r_[np.arange(101, dtype=float), np.nan, np.nan]
    assert percentile_interval(values, 0.9) == pytest.approx((5.0, 95.0, 101))
    assert percentile_interval(np.array([np.nan]), 0.95)[2] == 0


def test_bootstrap_mean_is_seeded_and_brackets_the_mean() -> None:
    values = np.random.default_rng(0).normal(3.0, 1.0, 400)
    low, high, valid = bootstrap_mean(values, resamples=500, confidence=0.95, seed=1)
    assert low < values.mean() < high and valid == 500
    assert (low, high, valid) == bootstrap_mean(values, resamples=500, confidence=0.95, seed=1)
    # Standard error 1/sqrt(400) = 0.05: the 95% interval is about ±0.1 wide.
    assert high - low == pytest.approx(2 * 1.96 * 0.05, rel=0.2)
    assert bootstrap_mean(values, resamples=0, confidence=0.95, seed=1)[2] == 0


def test_summarise_counts_undefined_values_apart() -> None:
    result = summarise(np.array([1.0, 2.0, np.nan, 3.0]), resamples=50, confidence=0.9, seed=0)
    assert result["mean"] == 2.0 and result["median"] == 2.0
    assert result["n"] == 3 and result["n_undefined"] == 1
    empty = summarise(np.array([np.nan]), resamples=50, confidence=0.9, seed=0)
    assert empty["mean"] is None and empty["ci_low"] is None and empty["n_undefined"] == 1


def test_macro_aucs_of_several_models_share_their_resamples() -> None:
    scores, targets = _scores(0)
    other, _ = _scores(1)
    stack = np.stack([scores, other[: len(scores)], scores])
    draws = bootstrap_macro_aucs(stack, targets, resamples=300, seed=4)
    assert draws.shape == (300, 3)
    np.testing.assert_array_equal(draws[:, 0], draws[:, 2])  # same model, same resamples
    single = bootstrap_macro_aucs(scores, targets, resamples=300, seed=4)
    np.testing.assert_allclose(single[:, 0], draws[:, 0])
    # A single model's interval is unchanged by the refactoring into bootstrap_macro_aucs.
    low, high, valid = bootstrap_macro_auc(scores, targets, resamples=300, confidence=0.95, seed=4)
    assert (low, high) == tuple(np.quantile(single[:, 0], [0.025, 0.975])) and valid == 300
    assert low < macro_auc(scores, targets) < high


def test_interval_of_a_mean_over_seeds_is_narrower_than_one_seeds() -> None:
    targets = _scores(0, n=300)[1]
    rng = np.random.default_rng(5)
    seeds = np.stack([rng.normal(size=targets.shape) + targets for _ in range(4)])
    one = bootstrap_macro_auc(seeds[0], targets, resamples=400, confidence=0.95, seed=0)
    mean = bootstrap_macro_auc(seeds, targets, resamples=400, confidence=0.95, seed=0)
    assert mean[1] - mean[0] < one[1] - one[0]
