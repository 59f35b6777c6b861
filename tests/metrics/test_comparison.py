"""Method comparisons: seed-and-image intervals, Holm verdicts, paired and cluster resampling."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from sibnet.metrics.classification import bootstrap_macro_aucs, macro_auc
from sibnet.metrics.comparison import (
    COMPARISON_COLUMNS,
    NO_INTERVAL_VERDICT,
    NO_SEED_VERDICT,
    add_verdicts,
    cluster_bootstrap_means,
    compare_aucs,
    compare_scores,
    holm,
    seed_level_delta,
)

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
    assert table.loc["good", "p_value"] < 0.05
    # One seed of "same": no seed-level interval, only the image-only one.
    assert np.isnan(table.loc["same", "delta_ci_low"]) and np.isnan(table.loc["same", "p_value"])
    assert np.isfinite(table.loc["same", "image_delta_ci_low"])
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
    width = table.loc["near", "image_delta_ci_high"] - table.loc["near", "image_delta_ci_low"]
    assert width < 0.25 * (table.loc["near", "ci_high"] - table.loc["near", "ci_low"])


def test_compare_aucs_needs_the_reference() -> None:
    probs, targets = _models({"a": [1.0]})
    with pytest.raises(ValueError, match="reference method 'b'"):
        compare_aucs(probs, targets, reference="b", **BOOT)


def test_auc_resamples_never_lose_a_rare_class() -> None:
    """Stratified by label pattern: a class with 2 positives in 300 keeps them in every
    resample, so the macro mean always averages the same classes."""
    rng = np.random.default_rng(1)
    targets = np.zeros((300, 3), dtype=np.int8)
    targets[:, 0] = rng.random(300) < 0.5
    targets[:, 1] = rng.random(300) < 0.3
    targets[[5, 77], 2] = 1  # rare label
    scores = rng.normal(size=targets.shape) + targets
    scores[:, 2] = -5.0 * targets[:, 2]  # the rare class is ranked worst: AUC 0
    draws = bootstrap_macro_aucs(scores, targets, resamples=500, seed=0)[:, 0]
    aucs = [macro_auc(scores[idx], targets[idx]) for idx in rng.integers(0, 300, (500, 300))]
    # Classes 0 and 1 score about 0.76, the rare one 0: a mean of about 0.51 with it and 0.76
    # without. Unstratified resamples that draw no rare positive jump to the second.
    assert max(aucs) > 0.65, "some unstratified resamples should drop the rare class"
    assert draws.max() < 0.65  # the rare class's 0 is in every stratified resample's mean


def test_seed_level_interval_covers_the_true_difference_at_the_nominal_rate() -> None:
    """Simulation: scores = method + image + method×image + seed + noise, 3 seeds each. The
    seed-and-image interval covers the true difference about 95% of the time; the image-only
    interval, conditional on the trained networks, does not when seeds vary."""
    rng = np.random.default_rng(0)
    simulations, images, seeds = 300, 100, 3
    covered = covered_images_only = 0
    for _ in range(simulations):
        shared = rng.normal(0, 0.15, images)
        frames = []
        for method, mean in (("ref", 0.5), ("new", 0.52)):
            interaction = rng.normal(0, 0.05, images)
            for seed in range(seeds):
                score = (
                    mean + shared + interaction + rng.normal(0, 0.03) + rng.normal(0, 0.1, images)
                )
                frames.append(
                    pd.DataFrame(
                        {"method": method, "seed": seed, "id": range(images), "dice": score}
                    )
                )
        table = compare_scores(
            pd.concat(frames),
            "dice",
            keys=("id",),
            reference="ref",
            resamples=200,
            confidence=0.95,
            seed=1,
        ).set_index("method")
        row = table.loc["new"]
        covered += row["delta_ci_low"] <= 0.02 <= row["delta_ci_high"]
        covered_images_only += row["image_delta_ci_low"] <= 0.02 <= row["image_delta_ci_high"]
    assert 0.91 <= covered / simulations <= 0.98
    assert covered_images_only / simulations < 0.75


def test_seed_level_delta_with_no_seed_variance_is_the_image_interval() -> None:
    """Identical seeds (no training randomness): SE comes from the images alone."""
    rng = np.random.default_rng(3)
    draws = rng.normal(0.6, 0.02, (1000, 1)).repeat(3, axis=1)
    ref = rng.normal(0.5, 0.02, (1000, 1)).repeat(3, axis=1)
    result = seed_level_delta(np.full(3, 0.6), draws, np.full(3, 0.5), ref, 0.95)
    assert result["delta"] == pytest.approx(0.1)
    assert result["se"] == pytest.approx(np.sqrt(2) * 0.02, rel=0.1)
    assert result["df"] == np.inf
    assert result["ci_low"] == pytest.approx(result["image_low"], abs=0.01)


def test_holm_adjusts_step_down() -> None:
    # Sorted 0.01, 0.02, 0.04 with m = 3: 0.03, max(0.03, 0.04), max(0.04, 0.04).
    assert holm([0.04, 0.01, np.nan, 0.02]) == pytest.approx(
        [0.04, 0.03, np.nan, 0.04], nan_ok=True
    )
    assert holm([0.5, 0.9]).tolist() == [1.0, 1.0]
    assert holm([]).size == 0


def test_verdicts_are_holm_adjusted_within_the_table() -> None:
    table = pd.DataFrame(
        {
            "method": ["ref", "a", "b", "c", "d"],
            "n_seeds": [3, 3, 3, 3, 1],
            "delta": [0.0, 0.1, -0.1, 0.1, 0.2],
            "p_value": [np.nan, 0.02, 0.012, 0.3, np.nan],
        }
    )
    out = add_verdicts(table, confidence=0.95, reference="ref").set_index("method")
    # Unadjusted, a and b would both be "significant"; Holm over 3 p-values: b 0.036, a 0.04.
    assert out.loc["b", "p_holm"] == pytest.approx(0.036)
    assert out.loc["a", "p_holm"] == pytest.approx(0.04)
    assert out.loc["b", "verdict"] == "lower" and out.loc["a", "verdict"] == "higher"
    assert out.loc["c", "verdict"] == "no clear difference"
    assert out.loc["d", "verdict"] == NO_SEED_VERDICT
    assert out.loc["ref", "verdict"] == "reference"
    tighter = table.assign(p_value=[np.nan, 0.02, 0.012, 0.013, 0.014])
    out = add_verdicts(tighter, confidence=0.95, reference="ref").set_index("method")
    assert (out.loc[["a", "b", "c", "d"], "p_holm"] <= 0.05).all()
    only = add_verdicts(
        table, confidence=0.95, reference="ref", family=table["method"].isin(["a"])
    ).set_index("method")
    assert only.loc["a", "p_holm"] == pytest.approx(0.02) and only.loc["b", "verdict"] == ""


def test_no_resamples_is_not_mistaken_for_one_seed() -> None:
    probs, targets = _models({"ref": [0.5, 0.6, 0.7], "new": [2.0, 2.1, 2.2]})
    for resamples in (0, 1):
        table = compare_aucs(
            probs, targets, reference="ref", resamples=resamples, confidence=0.95, seed=0
        )
        out = add_verdicts(table, confidence=0.95, reference="ref").set_index("method")
        assert out.loc["new", "verdict"] == NO_INTERVAL_VERDICT
    table = compare_aucs(probs, targets, reference="ref", **BOOT)
    assert add_verdicts(table, confidence=0.95, reference="ref").iloc[1]["verdict"] == "higher"


def test_paired_hd95_is_not_fooled_by_undefined_hard_items() -> None:
    """A method 5 px worse everywhere, but empty (HD95 undefined) on the hard half: averaged
    over its own defined items it looks 6 px better; paired, it is 5 px worse."""
    easy, hard = np.full(40, 3.0), np.full(40, 20.0)
    rng = np.random.default_rng(0)
    frames = []
    for seed in (0, 1, 2):
        noise = rng.normal(0, 0.5, 80)
        ref = np.concatenate([easy, hard]) + noise
        worse = np.concatenate([easy + 5, np.full(40, np.nan)]) + noise
        for method, values in (("ref", ref), ("toy", worse)):
            frames.append(
                pd.DataFrame(
                    {"method": method, "seed": seed, "id": range(80), "class": "x", "hd95": values}
                )
            )
    table = compare_scores(
        pd.concat(frames), "hd95", keys=("id", "class"), reference="ref", **BOOT
    ).set_index("method")
    toy = table.loc["toy"]
    assert table.loc["ref", "mean"] - toy["mean"] > 3  # unpaired means favour the toy
    assert toy["n_paired"] == 40
    assert toy["delta"] == pytest.approx(5.0)
    assert toy["delta_ci_low"] > 0 and toy["image_delta_ci_low"] > 0


def test_cluster_bootstrap_is_wider_than_the_pair_bootstrap_for_correlated_items() -> None:
    rng = np.random.default_rng(4)
    images = 150
    per_image = rng.normal(0.7, 0.1, images)
    frames = [
        pd.DataFrame(
            {
                "method": "m",
                "seed": 0,
                "id": np.arange(images).astype(str),
                "structure": structure,
                "dice": per_image + rng.normal(0, 0.01, images),
            }
        )
        for structure in ("lung_left", "lung_right")
    ]
    rows = pd.concat(frames)
    rows["pair"] = rows["id"] + "/" + rows["structure"]

    def width(cluster: str) -> float:
        row = compare_scores(
            rows, "dice", keys=("id", "structure", "pair"), reference="m", cluster=cluster, **BOOT
        ).iloc[0]
        return row["ci_high"] - row["ci_low"]

    assert width("id") > 1.25 * width("pair")  # about √2 for perfectly correlated structures


def test_cluster_bootstrap_means_known_answer() -> None:
    values = np.array([[1.0, 3.0, np.nan, 5.0]])
    clusters = np.array([0, 0, 1, 2])
    points, draws = cluster_bootstrap_means(values, clusters, resamples=50, seed=0)
    assert points == pytest.approx([3.0])
    # Cluster 1 has no finite item: a resample of only cluster 1 would be NaN; others lie in
    # [2, 5] (cluster means 2 and 5, weighted by their item counts).
    finite = draws[np.isfinite(draws)]
    assert ((finite >= 2.0) & (finite <= 5.0)).all()


def test_compare_scores_pairs_over_every_seed() -> None:
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
    # ref: seed 0 → 1.5, seed 1 → 3.5; new: seed 0 → 3, seed 1 → 4. Paired: only item a.
    assert table.loc["ref", "mean"] == pytest.approx(2.5) and table.loc["ref", "n"] == 2
    assert table.loc["new", "mean"] == pytest.approx(3.5) and table.loc["new", "n"] == 2
    assert table.loc["new", "n_paired"] == 1
    assert table.loc["new", "delta"] == pytest.approx(5.0 - 2.0)
    assert table.loc["new", "n_seeds"] == 2
    assert table.loc["ref", "median"] == pytest.approx(2.5)
    assert table.loc["ref", "delta_ci_low"] == table.loc["ref", "delta_ci_high"] == 0


def test_compare_scores_checks_its_cluster() -> None:
    rows = pd.DataFrame({"method": ["r"], "seed": [0], "id": ["a"], "class": ["x"], "dice": [1.0]})
    with pytest.raises(ValueError, match="cluster column 'image'"):
        compare_scores(rows, "dice", keys=("id", "class"), reference="r", cluster="image", **BOOT)
