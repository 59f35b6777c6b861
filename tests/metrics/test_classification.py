from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.metrics import compute_roc_auc

from sibnet.metrics.classification import (
    accuracy,
    balanced_accuracy,
    bootstrap_macro_auc,
    classification_metrics,
    macro_auc,
    per_class_auc,
)


def _data(n: int = 200, c: int = 4, seed: int = 0, multilabel: bool = False):
    rng = np.random.default_rng(seed)
    if multilabel:
        targets = (rng.random((n, c)) < 0.3).astype(np.int8)
    else:
        targets = np.eye(c, dtype=np.int8)[rng.integers(0, c, n)]
    scores = targets * 0.6 + rng.random((n, c))
    scores = np.round(scores, 1)  # create ties, which AUC must count as one half
    return scores, targets


@pytest.mark.parametrize("multilabel", [False, True])
def test_auc_matches_monai(multilabel: bool) -> None:
    scores, targets = _data(multilabel=multilabel)
    ours = per_class_auc(scores, targets)
    for c in range(targets.shape[1]):
        reference = compute_roc_auc(torch.tensor(scores[:, c]), torch.tensor(targets[:, c]))
        assert ours[c] == pytest.approx(float(reference), abs=1e-12)
    reference = compute_roc_auc(torch.tensor(scores), torch.tensor(targets), average="macro")
    assert macro_auc(scores, targets) == pytest.approx(float(reference), abs=1e-12)


def test_auc_extremes_and_undefined_classes() -> None:
    targets = np.array([[1, 0], [1, 0], [0, 0], [0, 0]])
    scores = np.array([[0.9, 0.1], [0.8, 0.2], [0.1, 0.3], [0.2, 0.4]])
    aucs = per_class_auc(scores, targets)
    assert aucs[0] == 1.0 and np.isnan(aucs[1])
    assert macro_auc(scores, targets) == 1.0
    assert per_class_auc(-scores, targets)[0] == 0.0


def test_bootstrap_interval_brackets_the_estimate_and_is_seeded() -> None:
    scores, targets = _data(n=300)
    low, high, valid = bootstrap_macro_auc(scores, targets, resamples=500, confidence=0.95, seed=1)
    assert valid == 500 and low < macro_auc(scores, targets) < high
    assert (low, high, valid) == bootstrap_macro_auc(
        scores, targets, resamples=500, confidence=0.95, seed=1
    )
    narrow = bootstrap_macro_auc(scores, targets, resamples=500, confidence=0.5, seed=1)
    assert low < narrow[0] < narrow[1] < high
    assert bootstrap_macro_auc(scores, targets, resamples=0, confidence=0.95, seed=1)[2] == 0


def test_accuracies() -> None:
    targets = np.eye(3, dtype=np.int8)[[0, 0, 0, 0, 1, 2]]
    probs = np.eye(3)[[0, 0, 0, 0, 0, 2]] * 0.8 + 0.1
    assert accuracy(probs, targets, "multiclass") == pytest.approx(5 / 6)
    assert balanced_accuracy(probs, targets, "multiclass") == pytest.approx((1 + 0 + 1) / 3)
    ml_targets = np.array([[1, 0], [0, 0], [1, 1], [0, 1]])
    ml_probs = np.array([[0.9, 0.2], [0.6, 0.1], [0.7, 0.4], [0.1, 0.8]])
    assert accuracy(ml_probs, ml_targets, "multilabel") == pytest.approx(6 / 8)
    # label 0: sens 2/2, spec 1/2; label 1: sens 1/2, spec 2/2
    assert balanced_accuracy(ml_probs, ml_targets, "multilabel") == pytest.approx(0.75)


def test_classification_metrics_is_json_ready() -> None:
    scores, targets = _data()
    result = classification_metrics(
        scores, targets, task="multiclass", classes=list("abcd"), resamples=100, seed=0
    )
    assert set(result["per_class_auc"]) == set("abcd")
    assert result["macro_auc_ci"][0] < result["macro_auc"] < result["macro_auc_ci"][1]
    assert result["n_images"] == 200 and result["bootstrap_resamples"] == 100


@pytest.mark.parametrize(
    ("scores", "targets", "message"),
    [
        (np.zeros((3, 2)), np.zeros((3, 3)), "same shape|shape \\(N, C\\)"),
        (np.zeros((0, 2)), np.zeros((0, 2)), "no images"),
        (np.zeros((2, 2)), np.full((2, 2), 2), "0 or 1"),
        (np.full((2, 2), np.nan), np.zeros((2, 2)), "NaN"),
    ],
)
def test_bad_inputs(scores, targets, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        per_class_auc(scores, targets)


def _pairwise_auc(scores: np.ndarray, targets: np.ndarray) -> float:
    """Brute-force Mann–Whitney AUC: P(positive > negative) + P(tie) / 2."""
    positive, negative = scores[targets == 1], scores[targets == 0]
    diff = positive[:, None] - negative[None, :]
    return float(((diff > 0) + 0.5 * (diff == 0)).mean())


def _with_unknown(targets: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.where(rng.random(targets.shape) < fraction, -1, targets).astype(np.int8)


def test_auc_with_unknown_labels_is_the_auc_of_the_known_subset() -> None:
    scores, targets = _data(n=300, c=5, multilabel=True)
    unknown = _with_unknown(targets, 0.3, seed=1)
    ours = per_class_auc(scores, unknown)
    for c in range(targets.shape[1]):
        known = unknown[:, c] >= 0
        subset_scores, subset_targets = scores[known, c], unknown[known, c]
        reference = compute_roc_auc(torch.tensor(subset_scores), torch.tensor(subset_targets))
        assert ours[c] == pytest.approx(float(reference), abs=1e-12)
        assert ours[c] == pytest.approx(_pairwise_auc(subset_scores, subset_targets), abs=1e-12)
    assert macro_auc(scores, unknown) == pytest.approx(float(np.mean(ours)), abs=1e-15)


def test_auc_with_unknown_labels_leaves_known_classes_bit_identical() -> None:
    scores, targets = _data(n=200, c=4, multilabel=True)
    unknown = targets.copy()
    unknown[:50, 2] = -1
    full = per_class_auc(scores, targets)
    masked = per_class_auc(scores, unknown)
    assert np.array_equal(full[[0, 1, 3]], masked[[0, 1, 3]])
    assert masked[2] == pytest.approx(per_class_auc(scores[50:], targets[50:])[2], abs=1e-15)


def test_auc_undefined_when_known_labels_have_one_value() -> None:
    targets = np.array([[1, -1, -1], [0, 1, -1], [1, -1, -1], [0, 1, -1]])
    scores = np.array([[0.9, 0.1, 0.5], [0.2, 0.2, 0.5], [0.8, 0.3, 0.5], [0.1, 0.4, 0.5]])
    aucs = per_class_auc(scores, targets)
    assert aucs[0] == 1.0 and np.isnan(aucs[1]) and np.isnan(aucs[2])
    assert macro_auc(scores, targets) == 1.0
    assert np.isnan(macro_auc(scores, np.where(targets == 0, -1, targets)))


@pytest.mark.parametrize(
    "call",
    [
        lambda s, t: bootstrap_macro_auc(s, t, resamples=10, confidence=0.95, seed=0),
        lambda s, t: accuracy(s, t, "multilabel"),
        lambda s, t: balanced_accuracy(s, t, "multilabel"),
        lambda s, t: classification_metrics(
            s, t, task="multilabel", classes=list("abcd"), resamples=10
        ),
    ],
)
def test_test_split_metrics_refuse_unknown_labels(call) -> None:
    scores, targets = _data(multilabel=True)
    targets = _with_unknown(targets, 0.1, seed=0)
    with pytest.raises(ValueError, match="unknown labels \\(-1\\) are not allowed"):
        call(scores, targets)


def test_unknown_labels_accept_only_minus_one() -> None:
    with pytest.raises(ValueError, match="0 or 1, or -1"):
        per_class_auc(np.zeros((2, 2)), np.array([[0, -2], [1, 0]]))


def test_average_ranks_equal_scipys_bit_for_bit() -> None:
    from scipy.stats import rankdata

    from sibnet.metrics.classification import average_ranks

    rng = np.random.default_rng(0)
    for shape in ((1,), (7,), (50, 40), (3, 4, 25)):
        values = rng.integers(0, 6, size=shape).astype(np.float32)  # many ties
        assert np.array_equal(average_ranks(values), rankdata(values, axis=-1))
        values = rng.random(shape)
        assert np.array_equal(average_ranks(values), rankdata(values, axis=-1))
    with_nan = np.array([[0.1, np.nan, 0.3], [0.2, 0.2, 0.1]])
    assert np.array_equal(average_ranks(with_nan), rankdata(with_nan, axis=-1), equal_nan=True)
