from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.metrics import compute_hausdorff_distance
from skimage.draw import disk, polygon
from skimage.metrics import structural_similarity

from sibnet.metrics.saliency import binarise, convex_hull_mask, dice, hd95, saliency_agreement


def _blob(shape: tuple[int, int], center: tuple[int, int], radius: float) -> np.ndarray:
    mask = np.zeros(shape, dtype=bool)
    mask[disk(center, radius, shape=shape)] = True
    return mask


def _random_mask(rng: np.random.Generator, shape=(48, 48)) -> np.ndarray:
    mask = np.zeros(shape, dtype=bool)
    for _ in range(rng.integers(1, 4)):
        center = rng.integers(5, shape[0] - 5, size=2)
        mask |= _blob(shape, tuple(center), rng.uniform(2, 9))
    return mask


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("spacing", [None, (0.5, 2.0)])
def test_hd95_matches_monai(seed: int, spacing) -> None:
    rng = np.random.default_rng(seed)
    a, b = _random_mask(rng), _random_mask(rng)
    reference = compute_hausdorff_distance(
        torch.tensor(a)[None, None],
        torch.tensor(b)[None, None],
        percentile=95,
        spacing=spacing,
    )
    assert hd95(a, b, spacing) == pytest.approx(float(reference), rel=1e-5, abs=1e-6)


def test_dice_matches_the_formula_and_ssim_matches_skimage() -> None:
    rng = np.random.default_rng(1)
    a, b = _random_mask(rng), _random_mask(rng)
    expected = 2 * (a & b).sum() / (a.sum() + b.sum())
    assert dice(a, b) == pytest.approx(expected)
    result = saliency_agreement(a.astype(float), b, threshold=0.5)
    assert result["ssim_raw"] == pytest.approx(
        structural_similarity(a.astype(float), b.astype(float), data_range=1.0)
    )


def test_hull_of_known_shapes() -> None:
    shape = (40, 40)
    square_corners = np.zeros(shape, dtype=bool)
    square_corners[[5, 5, 30, 30], [8, 25, 8, 25]] = True
    hull = convex_hull_mask(square_corners)
    assert hull[5:31, 8:26].all() and hull.sum() == 26 * 18
    ring = _blob(shape, (20, 20), 10) & ~_blob(shape, (20, 20), 6)
    np.testing.assert_array_equal(convex_hull_mask(ring)[14:27, 14:27], True)
    triangle = np.zeros(shape, dtype=bool)
    triangle[[2, 2, 30], [2, 30, 2]] = True
    rr, cc = polygon([2, 2, 30], [2, 30, 2], shape)
    expected = np.zeros(shape, dtype=bool)
    expected[rr, cc] = True
    assert (convex_hull_mask(triangle) ^ expected).sum() <= 30  # edge pixels only


def test_hull_makes_a_scattered_map_agree_with_its_blob() -> None:
    truth = _blob((64, 64), (32, 32), 12)
    saliency = np.zeros((64, 64))
    rows, cols = np.nonzero(truth)
    saliency[rows[::7], cols[::7]] = 1.0  # sparse points spread over the lesion
    result = saliency_agreement(saliency, truth)
    assert result["dice"] > 0.85 > result["dice_raw"]
    assert result["pointing_hit"] and not result["empty_binarisation"]


def test_degenerate_cases() -> None:
    truth = _blob((32, 32), (16, 16), 5)
    constant = saliency_agreement(np.ones((32, 32)), truth)
    assert constant["empty_binarisation"] and constant["dice"] == 0.0
    assert np.isnan(constant["hd95"]) and np.isfinite(constant["ssim"])
    line = np.zeros((32, 32))
    line[16, 5:20] = 1.0  # collinear foreground: Qhull cannot build a hull
    collinear = saliency_agreement(line, truth)
    assert collinear["hull_degenerate"] and collinear["dice"] == collinear["dice_raw"]
    single = np.zeros((32, 32))
    single[16, 16] = 1.0
    one_point = saliency_agreement(single, truth)
    assert one_point["hull_degenerate"] and one_point["pointing_hit"]
    empty_truth = saliency_agreement(single, np.zeros((32, 32), dtype=bool))
    assert empty_truth["dice"] == 0.0 and np.isnan(empty_truth["hd95"])
    both_empty = saliency_agreement(np.ones((32, 32)), np.zeros((32, 32), dtype=bool))
    assert both_empty["dice"] == 1.0 and both_empty["hd95"] == 0.0


def test_thresholds() -> None:
    saliency = np.arange(100, dtype=float).reshape(10, 10)
    assert binarise(saliency, "top10%").sum() == 10
    assert binarise(saliency, 0.5).sum() == 50
    assert 0 < binarise(saliency, "otsu").sum() < 100
    for bad in ("top0%", "median", 1.5, "top101%"):
        with pytest.raises(ValueError, match="threshold"):
            binarise(saliency, bad)


def test_bad_inputs() -> None:
    with pytest.raises(ValueError, match="same \\(H, W\\) shape"):
        saliency_agreement(np.zeros((4, 4)), np.zeros((5, 5), dtype=bool))
    with pytest.raises(ValueError, match="NaN"):
        binarise(np.full((4, 4), np.nan))


def test_pointing_game_shares_ties_and_energy_counts_mass() -> None:
    from sibnet.metrics.saliency import energy_fraction, pointing_game

    mask = np.zeros((10, 10), dtype=bool)
    mask[:2] = True  # 20% of the image
    assert pointing_game(np.ones((10, 10)), mask) == pytest.approx(0.2)  # chance level
    peak = np.zeros((10, 10))
    peak[0, 0] = 1.0
    assert pointing_game(peak, mask) == 1.0 and pointing_game(peak, ~mask) == 0.0
    assert energy_fraction(np.ones((10, 10)), mask) == pytest.approx(0.2)
    signed = np.full((10, 10), -1.0)
    signed[0, :5] = 2.0  # negative values carry no mass
    assert energy_fraction(signed, mask) == 1.0
    assert np.isnan(energy_fraction(np.zeros((10, 10)), mask))


def test_body_mask_keeps_the_dark_lungs_inside() -> None:
    from sibnet.data.phantom_images import make_phantom
    from sibnet.metrics.saliency import body_mask

    phantom = make_phantom(3, 64, 0)
    for image, organs in zip(phantom.images[:, 0], phantom.organ_masks, strict=True):
        body = body_mask(image)
        assert body[organs.any(axis=0)].mean() > 0.99  # lungs and heart are in the body
        assert 0.3 < body.mean() < 0.95 and not body[0, 0]  # the corners are air


def test_ssim_rewards_an_empty_map() -> None:
    """The documented SSIM caveat: an empty prediction scores higher than a hull that
    contains the lesion."""
    size = 128
    rows, cols = np.mgrid[:size, :size]
    nodule = (rows - 60) ** 2 + (cols - 40) ** 2 <= 6**2
    empty = saliency_agreement(np.zeros((size, size)), nodule)
    hull = np.exp(-((rows - 60) ** 2 + (cols - 40) ** 2) / (2 * 20.0**2))
    containing = saliency_agreement(hull, nodule)
    assert containing["dice"] > empty["dice"] == 0.0
    assert empty["ssim"] > 0.95 > containing["ssim"]
