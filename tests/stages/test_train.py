from __future__ import annotations

import numpy as np

from sibnet.stages.train import class_weights


def test_class_weights_ignore_unknown_labels() -> None:
    multi = np.array([[1, 0], [1, -1], [0, 0], [1, 1], [-1, 0], [0, -1]], dtype=np.int8)
    # label 0: 3 positives, 2 negatives; label 1: 1 positive, 3 negatives
    np.testing.assert_allclose(class_weights(multi, "multilabel"), [2 / 3, 3.0])
    # every label unknown or negative: no positives, weight 1
    none = np.array([[-1, 0], [-1, 0]], dtype=np.int8)
    np.testing.assert_allclose(class_weights(none, "multilabel"), [1.0, 1.0])


def test_class_weights_unchanged_for_known_labels() -> None:
    multi = (np.random.default_rng(0).random((50, 4)) < 0.3).astype(np.int8)
    positives = multi.sum(axis=0)
    np.testing.assert_allclose(
        class_weights(multi, "multilabel"), (len(multi) - positives) / positives, rtol=1e-6
    )
