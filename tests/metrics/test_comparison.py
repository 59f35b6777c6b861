"""Method comparisons over seeds with paired bootstrap intervals."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from sibnet.metrics.classification import macro_auc
from sibnet.metrics.comparison import COMPARISON_COLUMNS, compare_aucs, compare_scores

BOOT = {"resamples": 400, "confidence": 0.95, "seed": 0}


def _models(skills: dict[str, list[float]], n: int = 240):
    rng = np.random.default_rng(0)
    targets = np.eye(4, dtype=np.int8)[rng.integers(0, 4, n)]
    return {
        m: [rng.normal(size=targets.shape) + s * targets for s in seeds]
        for m, seeds in skills.items()
    }, targets


def test_compare_aucs_means_deltas_and_intervals() -> None:
    probs, targets = _models({"ref": [0.5, 0.6], "good": [2.0, 2.2], "same": [0.5]})
    probs["same"] = [probs["ref"][0]]
    table = compare_aucs(probs, targets, reference="ref", **BOOT).set_index("method")
    assert list(table.reset_index().columns) == list(COMPARISON_COLUMNS)
    expected = np.mean([macro_auc(p, targets) for p in probs["good"]])
    assert table.loc["good", "mean"] == pytest.approx(expected)
    assert table.loc["good", "n_seeds"] == 2 and table.loc["good", "n"] == len(targets)
    assert table.loc["good", "sd"] > 0 and np.isnan(table.loc["same", "sd"])
    assert table.loc["good", "delta_ci_low"] > 0  # clearly better, and the interval says so
    assert table.loc["ref", "delta"] == 0
    assert table.loc["ref", "delta_ci_low"] == table.loc["ref", "delta_ci_high"] == 0
    for method in table.index:
        assert (
            table.loc[method, "ci_low"] <= table.loc[method, "mean"] <= table.loc[method, "ci_high"]
        )


def test_a_paired_delta_is_tighter_than_the_two_intervals_suggest() -> None:
    probs, targets = _models({"ref": [1.0]})
    rng = np.random.default_rng(9)
    probs["near"] = [probs["ref"][0] + 0.05 * rng.normal(size=targets.shape)]
    table = compare_aucs(probs, targets, reference="ref", **BOOT).set_index("method")
    width = table.loc["near", "delta_ci_high"] - table.loc["near", "delta_ci_low"]
    assert width < 0.25 * (table.loc["near", "ci_high"] - table.loc["near", "ci_low"])


def test_compare_aucs_needs_the_reference() -> None:
    probs, targets = _models({"a": [1.0]})
    with pytest.raises(ValueError, match="reference method 'b'"):
        compare_aucs(probs, targets, reference="b", **BOOT)


def test_compare_scores_averages_each_item_over_seeds_first() -> None:
    rows = pd.DataFrame(
        {
            "method": ["ref"] * 6 + ["new"] * 6,
            "seed": [0, 0, 0, 1, 1, 1] * 2,
            "id": ["a", "b", "c"] * 4,
            "class": "x",
            "hd95": [1.0, 2.0, np.nan, 3.0, 4.0, np.nan, 5.0, np.nan, 1.0, 5.0, np.nan, 3.0],
        }
    )
    table = compare_scores(rows, "hd95", keys=("id", "class"), reference="ref", **BOOT)
    table = table.set_index("method")
    # ref: a → 2, b → 3, c undefined; new: a → 5, b undefined, c → 2.
    assert table.loc["ref", "mean"] == pytest.approx(2.5) and table.loc["ref", "n"] == 2
    assert table.loc["new", "mean"] == pytest.approx(3.5) and table.loc["new", "n"] == 2
    assert table.loc["new", "delta"] == pytest.approx(1.0)
    assert table.loc["new", "n_seeds"] == 2
    assert table.loc["ref", "median"] == pytest.approx(2.5)
    assert table.loc["ref", "delta_ci_low"] == table.loc["ref", "delta_ci_high"] == 0
