"""``sibnet robustness``: the injected noise, and AUC under it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from sibnet.config import Params
from sibnet.data.prepared import PreparedDataset
from sibnet.data.tensors import PreparedImages
from sibnet.stages.evaluate import evaluate
from sibnet.stages.robustness import ROBUSTNESS_COLUMNS, NoisyImages, robustness
from tests.conftest import untracked, with_changes


@pytest.fixture(scope="module")
def test_images(prepared_tiny: Path) -> PreparedImages:
    return PreparedImages(PreparedDataset.open(prepared_tiny), "test")


def _stack(images: NoisyImages | PreparedImages) -> np.ndarray:
    return np.stack([images[i]["image"].numpy() for i in range(len(images))])


@pytest.mark.parametrize("sigma", [0.005, 0.05, 0.1])
def test_unclipped_noise_has_the_requested_standard_deviation(
    test_images: PreparedImages, sigma: float
) -> None:
    noisy = NoisyImages(test_images, sigma, clip=False, noise_seed=0)
    added = _stack(noisy) - _stack(test_images)  # 25 images of 64×64: ~100k samples
    assert added.mean() == pytest.approx(0.0, abs=3 * sigma / np.sqrt(added.size) + 1e-7)
    assert added.std() == pytest.approx(sigma, rel=0.02)
    assert noisy.injected() == pytest.approx((added.mean(), added.std()), rel=1e-6, abs=1e-9)


def test_clipping_keeps_intensities_in_range(test_images: PreparedImages) -> None:
    clipped = _stack(NoisyImages(test_images, 0.1, clip=True, noise_seed=0))
    unclipped = _stack(NoisyImages(test_images, 0.1, clip=False, noise_seed=0))
    assert clipped.min() >= 0.0 and clipped.max() <= 1.0
    assert unclipped.min() < 0.0  # the phantom's dark background goes negative
    mean, std = NoisyImages(test_images, 0.1, clip=True, noise_seed=0).injected()
    assert std < 0.1 and mean > 0  # clipping at the dark background: one-sided


def test_noise_is_seeded_by_noise_seed_and_sigma(test_images: PreparedImages) -> None:
    first = NoisyImages(test_images, 0.05, clip=False, noise_seed=0).noise
    np.testing.assert_array_equal(
        first, NoisyImages(test_images, 0.05, clip=False, noise_seed=0).noise
    )
    assert not np.array_equal(first, NoisyImages(test_images, 0.05, clip=False, noise_seed=1).noise)
    other = NoisyImages(test_images, 0.1, clip=False, noise_seed=0).noise
    assert np.corrcoef(first.ravel(), other.ravel())[0, 1] < 0.05  # σ gets its own stream


def test_sigma_zero_leaves_the_images_untouched(test_images: PreparedImages) -> None:
    np.testing.assert_array_equal(
        _stack(NoisyImages(test_images, 0.0, clip=True, noise_seed=0)), _stack(test_images)
    )


def test_robustness_table_and_clean_auc_equal_to_evaluate(
    tiny_params: Params, prepared_tiny: Path, trained_tiny: Path, tmp_path: Path
) -> None:
    params = untracked(tiny_params)
    clean = evaluate(
        params,
        prepared=prepared_tiny,
        checkpoint=trained_tiny,
        metrics=tmp_path / "metrics.json",
        predictions=tmp_path / "predictions.parquet",
        method="baseline",
        seed=0,
    )
    table = robustness(
        params,
        prepared=prepared_tiny,
        checkpoint=trained_tiny,
        robustness=tmp_path / "robustness.parquet",
        predictions=tmp_path / "robustness_predictions.parquet",
        method="baseline",
        seed=0,
    )
    stored = pd.read_parquet(tmp_path / "robustness.parquet")
    pd.testing.assert_frame_equal(stored, table)
    assert list(stored.columns[: len(ROBUSTNESS_COLUMNS)]) == list(ROBUSTNESS_COLUMNS)
    assert {c for c in stored.columns if c.startswith("auc_")} == {
        f"auc_{c}" for c in clean["per_class_auc"]
    }
    assert stored["sigma"].tolist() == params.robustness.sigmas
    at_zero = stored[stored["sigma"] == 0.0].iloc[0]
    assert at_zero["macro_auc"] == pytest.approx(clean["macro_auc"], abs=1e-12)
    assert (stored["ci_low"] <= stored["macro_auc"]).all()
    assert (stored["macro_auc"] <= stored["ci_high"]).all()
    np.testing.assert_allclose(
        stored["noise_std_measured"], stored["sigma"], rtol=0.1
    )  # clipping shrinks it a little
    own = params.prepare.phantom.noise_std  # the phantom's own pixel noise
    assert (stored["intrinsic_noise_std"] == own).all()
    np.testing.assert_allclose(
        stored["total_noise_std"], np.hypot(own, stored["noise_std_measured"]), rtol=1e-12
    )

    noisy = pd.read_parquet(tmp_path / "robustness_predictions.parquet")
    evaluated = pd.read_parquet(tmp_path / "predictions.parquet")
    assert len(noisy) == len(evaluated) * len(params.robustness.sigmas)
    zero = noisy[noisy["sigma"] == 0.0].drop(columns="sigma").reset_index(drop=True)
    pd.testing.assert_frame_equal(zero, evaluated)


def test_robustness_is_deterministic(
    tiny_params: Params, prepared_tiny: Path, trained_tiny: Path, tmp_path: Path
) -> None:
    params = with_changes(untracked(tiny_params), robustness={"sigmas": [0.05], "bootstrap": 20})
    for name in ("a", "b"):
        robustness(
            params,
            prepared=prepared_tiny,
            checkpoint=trained_tiny,
            robustness=tmp_path / f"{name}.parquet",
            predictions=tmp_path / f"{name}_predictions.parquet",
            method="baseline",
            seed=0,
        )
    for suffix in (".parquet", "_predictions.parquet"):
        assert (tmp_path / f"a{suffix}").read_bytes() == (tmp_path / f"b{suffix}").read_bytes()
