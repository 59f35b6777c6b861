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
