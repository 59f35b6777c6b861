"""Spatial coherence's formulation options against loop-by-loop references (NumPy, SciPy,
scikit-image): erosion border, window border, connected components, reduction."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.ndimage as ndi
import torch
from skimage.filters import threshold_otsu
from skimage.measure import label

from sibnet.losses import connected_components, salient_region, spatial_coherence
from sibnet.losses.sibnet import SpatialCoherenceLoss


def _region(single: np.ndarray, border: str) -> np.ndarray:
    above = single > threshold_otsu(single, nbins=256)
    return ndi.binary_erosion(above, border_value=int(border == "foreground"))


def _pair_sum(m: np.ndarray, kernel_size: int, window_border: str) -> float:
    h, w = m.shape
    r = kernel_size // 2
    total = 0.0
    for y in range(h):
        for x in range(w):
            for dy in range(-r, r + 1):
                for dx in range(-r, r + 1):
                    yy, xx = y + dy, x + dx
                    inside = 0 <= yy < h and 0 <= xx < w
                    if not inside and window_border == "clip":
                        continue
                    total += (m[y, x] - (m[yy, xx] if inside else 0.0)) ** 2
    return total


def _reference_sc(saliency: np.ndarray, kernel_size: int, **options: str) -> float:
    total = 0.0
    for per_image in saliency:
        for single in per_image:
            region = _region(single, options["erosion_border"])
            if options["regions"] == "whole":
                parts = [region]
            else:
                labels = label(region, connectivity=2)
                last = labels.max() if options["regions"] == "components_skip_last" else 0
                parts = [labels == i for i in range(1, labels.max() + 1) if i != last]
            for part in parts:
                total += _pair_sum(single * part, kernel_size, options["window_border"])
    return total if options["reduction"] == "sum" else total / len(saliency)


def _maps(seed: int, shape: tuple[int, ...]) -> torch.Tensor:
    """Smooth random maps with several bumps (several components after Otsu)."""
    rng = np.random.default_rng(seed)
    raw = rng.standard_normal(shape)
    return torch.from_numpy(ndi.gaussian_filter(raw, sigma=(0, 0, 1.2, 1.2)))


@pytest.mark.parametrize("erosion_border", ["background", "foreground"])
@pytest.mark.parametrize("window_border", ["zero", "clip"])
@pytest.mark.parametrize("regions", ["whole", "components", "components_skip_last"])
def test_sc_options_equal_the_loop_reference(
    erosion_border: str, window_border: str, regions: str
) -> None:
    saliency = _maps(0, (2, 3, 12, 14))
    for reduction in ("mean", "sum"):
        options = {
            "erosion_border": erosion_border,
            "window_border": window_border,
            "regions": regions,
            "reduction": reduction,
        }
        found = float(spatial_coherence(saliency, 5, **options))
        expected = _reference_sc(saliency.numpy(), 5, **options)
        assert found == pytest.approx(expected, rel=1e-9, abs=1e-12), options


def test_the_options_change_the_value_on_these_maps() -> None:
    """Each option matters on maps with several components touching the border."""
    saliency = _maps(1, (2, 3, 12, 12))
    base = float(spatial_coherence(saliency, 5))
    for key, value in (
        ("erosion_border", "foreground"),
        ("window_border", "clip"),
        ("regions", "components"),
        ("regions", "components_skip_last"),
        ("reduction", "sum"),
    ):
        assert float(spatial_coherence(saliency, 5, **{key: value})) != pytest.approx(base), key


def test_salient_region_foreground_border_keeps_border_pixels() -> None:
    maps = _maps(2, (5, 1, 9, 11))[:, 0]
    for border in ("background", "foreground"):
        found = salient_region(maps, border).numpy()
        for k in range(len(maps)):
            np.testing.assert_array_equal(found[k], _region(maps[k].numpy(), border))
    full = torch.zeros(1, 6, 6)
    full[0, :, :3] = 1.0
    region = salient_region(full, "foreground")[0]
    assert region[:, 0].all() and not salient_region(full)[0][:, 0].any()
    with pytest.raises(ValueError, match="border"):
        salient_region(maps, "zero")


@pytest.mark.parametrize("method", ["scipy", "torch", "auto"])
def test_connected_components_equal_skimage_label(method: str) -> None:
    rng = np.random.default_rng(0)
    for _ in range(40):
        h, w = rng.integers(1, 40, size=2)
        masks = rng.random((4, h, w)) < rng.uniform(0.1, 0.8)
        found = connected_components(torch.from_numpy(masks), method=method).numpy()
        for k in range(4):
            np.testing.assert_array_equal(found[k], label(masks[k], connectivity=2))


def test_connected_components_of_a_long_snake_converge() -> None:
    mask = torch.zeros(1, 31, 31, dtype=torch.bool)
    mask[0, ::2, :] = True  # rows joined alternately at the right and left end
    mask[0, 1::4, -1] = True
    mask[0, 3::4, 0] = True
    found = connected_components(mask, method="torch")
    assert int(found.max()) == 1 and bool((found[mask] == 1).all())


def test_connected_components_validate() -> None:
    with pytest.raises(ValueError, match="bool"):
        connected_components(torch.zeros(1, 3, 3))
    with pytest.raises(ValueError, match="method"):
        connected_components(torch.zeros(1, 3, 3, dtype=torch.bool), method="cuda")
    assert connected_components(torch.zeros(0, 3, 3, dtype=torch.bool)).shape == (0, 3, 3)


def test_sc_components_gradient_and_module() -> None:
    saliency = _maps(3, (2, 2, 10, 10)).float().requires_grad_()
    options = {"regions": "components_skip_last", "window_border": "clip", "reduction": "sum"}
    value = spatial_coherence(saliency, 5, **options)
    value.backward()
    assert saliency.grad is not None and torch.isfinite(saliency.grad).all()
    module = SpatialCoherenceLoss(5, **options)
    assert float(module(saliency.detach())) == pytest.approx(float(value.detach()))
    assert "components_skip_last" in repr(module)


@pytest.mark.parametrize(
    ("key", "value"), [("window_border", "edge"), ("regions", "all"), ("reduction", "max")]
)
def test_sc_options_are_validated(key: str, value: str) -> None:
    with pytest.raises(ValueError, match=key):
        spatial_coherence(torch.rand(1, 2, 8, 8), **{key: value})
