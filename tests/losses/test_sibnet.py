from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.ndimage as ndi
import torch
from skimage.exposure import histogram
from skimage.filters import threshold_otsu

from sibnet.losses import (
    ClassDistinctivenessLoss,
    SpatialCoherenceLoss,
    class_distinctiveness,
    otsu_threshold,
    salient_region,
    spatial_coherence,
)

# ---------------------------------------------------------------- references (NumPy, loops)


def reference_region(single: np.ndarray) -> np.ndarray:
    """scikit-image Otsu + SciPy erosion (default cross, border_value=0) of one ``(h, w)`` map."""
    return ndi.binary_erosion(single > threshold_otsu(single, nbins=256))


def reference_sc(saliency: np.ndarray, kernel_size: int) -> float:
    """The definition of spatial coherence, loop by loop, for ``(B, C, h, w)`` maps."""
    batch, classes, h, w = saliency.shape
    r = kernel_size // 2
    total = 0.0
    for b in range(batch):
        for c in range(classes):
            m = saliency[b, c] * reference_region(saliency[b, c])
            for y in range(h):
                for x in range(w):
                    for dy in range(-r, r + 1):
                        for dx in range(-r, r + 1):
                            if dy == 0 and dx == 0:
                                continue
                            yy, xx = y + dy, x + dx
                            inside = 0 <= yy < h and 0 <= xx < w
                            m_j = m[yy, xx] if inside else 0.0
                            total += (m[y, x] - m_j) ** 2
    return total / batch


def between_class_variance(single: np.ndarray, threshold: float) -> float:
    """Otsu's criterion, in float64, of splitting scikit-image's histogram at ``threshold``."""
    counts, centres = histogram(single.reshape(-1), 256, source_range="image")
    t = int(np.flatnonzero(centres == threshold)[0])
    c, v = counts.astype(np.float64), centres.astype(np.float64)
    w1, w2 = c[: t + 1].sum(), c[t + 1 :].sum()
    mean1 = (c[: t + 1] * v[: t + 1]).sum() / w1
    mean2 = (c[t + 1 :] * v[t + 1 :]).sum() / w2
    return w1 * w2 * (mean1 - mean2) ** 2


def random_maps(kind: str, n: int, shape: tuple[int, ...], seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    size = (n, *shape)
    if kind == "uniform":
        return rng.random(size)
    if kind == "bimodal":
        high = rng.random(size) < 0.3
        return np.where(high, rng.normal(3.0, 0.5, size), rng.normal(0.0, 0.5, size))
    if kind == "relu":  # Grad-CAM-like: many exact zeros
        return np.maximum(rng.normal(size=size), 0.0)
    if kind == "ties":  # few distinct values
        return rng.integers(0, 5, size) * 0.37
    if kind == "scaled":
        return rng.random(size) * 10.0 ** rng.uniform(-6, 6, (n,) + (1,) * len(shape))
    if kind == "blobs":  # smooth, like real Grad-CAM maps: a bump plus a little noise
        yy, xx = np.meshgrid(*(np.arange(k) for k in shape[-2:]), indexing="ij")
        centre = rng.uniform(0, 1, (n, 2, 1, 1)) * np.array(shape[-2:]).reshape(1, 2, 1, 1)
        width = rng.uniform(1.5, 3.0, (n, 1, 1))
        squared = (yy - centre[:, 0]) ** 2 + (xx - centre[:, 1]) ** 2
        return np.exp(-squared / (2 * width**2)) + 0.05 * rng.random(size)
    raise AssertionError(kind)


# ---------------------------------------------------------------- class distinctiveness


@pytest.mark.parametrize("classes", [2, 3, 5])
def test_cd_identical_maps_is_one(classes: int) -> None:
    maps = torch.rand(4, 1, 8, 8).expand(4, classes, 8, 8)
    assert class_distinctiveness(maps).item() == pytest.approx(1.0, abs=1e-6)


@pytest.mark.parametrize("classes", [2, 4])
def test_cd_disjoint_supports_is_zero(classes: int) -> None:
    maps = torch.zeros(3, classes, 8, 8)
    for c in range(classes):
        maps[:, c, c] = torch.rand(3, 8) + 0.1  # class c lives on row c only
    assert class_distinctiveness(maps).item() == 0.0


def test_cd_hand_computed() -> None:
    maps = torch.tensor(
        [
            [[[1.0, 1.0], [0.0, 0.0]], [[1.0, 0.0], [1.0, 0.0]]],  # cos = 1 / 2
            [[[3.0, 0.0], [0.0, 4.0]], [[0.0, 0.0], [0.0, -1.0]]],  # cos = -4 / 5
        ]
    )
    assert class_distinctiveness(maps).item() == pytest.approx((0.5 + 0.8) / 2)


def test_cd_three_classes_averages_pairs() -> None:
    maps = torch.tensor([[[[1.0, 0.0]], [[1.0, 1.0]], [[0.0, 1.0]]]])  # cos: √½, 0, √½
    assert class_distinctiveness(maps).item() == pytest.approx(2 * math.sqrt(0.5) / 3)


def test_cd_one_class_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 2 classes"):
        class_distinctiveness(torch.rand(2, 1, 8, 8))


def test_cd_zero_map_is_finite_and_counts_as_zero_similarity() -> None:
    maps = torch.rand(2, 3, 8, 8)
    maps[:, 1] = 0.0
    maps.requires_grad_(True)
    value = class_distinctiveness(maps)
    value.backward()
    assert torch.isfinite(value)
    assert torch.isfinite(maps.grad).all()
    only_pair = class_distinctiveness(maps.detach()[:, [0, 2]]).item()
    assert value.item() == pytest.approx(only_pair / 3)  # the two pairs with the zero map add 0


# ---------------------------------------------------------------- Otsu threshold


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(8, 8), (32, 32), (6, 7)])
@pytest.mark.parametrize("kind", ["uniform", "bimodal", "relu", "ties", "scaled"])
def test_otsu_equals_skimage(kind: str, shape: tuple[int, int], dtype: type) -> None:
    maps = random_maps(kind, 300, shape, seed=len(kind) * 100 + shape[0]).astype(dtype)
    ours = otsu_threshold(torch.from_numpy(maps)).numpy()
    ref = np.array([threshold_otsu(m, nbins=256) for m in maps])
    assert ours.dtype == dtype
    differ = np.flatnonzero(ours != ref)
    if dtype is np.float64:
        assert differ.size == 0
    # float32: scikit-image accumulates its variances in float32; where it disagrees, the two
    # splits must be a tie to its rounding, and ours the better one in float64.
    assert differ.size <= len(maps) // 100
    for i in differ:
        ours_var = between_class_variance(maps[i], ours[i])
        ref_var = between_class_variance(maps[i], ref[i])
        assert 0 <= (ours_var - ref_var) / ours_var < 1e-6


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_otsu_constant_map_returns_its_value(dtype: torch.dtype) -> None:
    maps = torch.stack([torch.full((8, 8), 0.3), torch.zeros(8, 8), torch.rand(8, 8)]).to(dtype)
    ours = otsu_threshold(maps)
    for single, value in zip(maps.numpy(), ours, strict=True):
        assert value.item() == threshold_otsu(single, nbins=256)
    assert ours[0].item() == maps[0, 0, 0].item() and ours[1].item() == 0.0


def test_otsu_batched_equals_per_map_and_flat_equals_2d() -> None:
    maps = torch.from_numpy(random_maps("relu", 64, (14, 14), seed=3)).float()
    batched = otsu_threshold(maps)
    one_by_one = torch.cat([otsu_threshold(m[None]) for m in maps])
    assert torch.equal(batched, one_by_one)
    assert torch.equal(batched, otsu_threshold(maps.reshape(64, -1)))


def test_otsu_has_no_gradient_and_validates() -> None:
    maps = torch.rand(3, 8, 8, requires_grad=True)
    assert not otsu_threshold(maps).requires_grad
    with pytest.raises(ValueError, match="bins"):
        otsu_threshold(maps, bins=1)
    with pytest.raises(ValueError, match="maps"):
        otsu_threshold(torch.rand(8))
    with pytest.raises(ValueError, match="floating point"):
        otsu_threshold(torch.ones(2, 4, dtype=torch.int64))


# ---------------------------------------------------------------- salient region (erosion)


@pytest.mark.parametrize("density", [0.3, 0.6, 0.9])
@pytest.mark.parametrize("shape", [(3, 5), (8, 8), (17, 13)])
def test_erosion_equals_scipy(shape: tuple[int, int], density: float) -> None:
    rng = np.random.default_rng(int(density * 10) + shape[0])
    masks = rng.random((200, *shape)) < density
    masks[:, 0, 0], masks[:, -1, -1] = True, False  # not constant: Otsu separates 0 from 1
    ours = salient_region(torch.from_numpy(masks.astype(np.float32)))
    assert ours.dtype == torch.bool and ours.shape == masks.shape
    expected = np.stack([ndi.binary_erosion(m) for m in masks])
    np.testing.assert_array_equal(ours.numpy(), expected)


@pytest.mark.parametrize("kind", ["uniform", "bimodal", "relu", "ties"])
def test_salient_region_equals_skimage_and_scipy(kind: str) -> None:
    maps = random_maps(kind, 200, (9, 11), seed=7)
    ours = salient_region(torch.from_numpy(maps)).numpy()
    np.testing.assert_array_equal(ours, np.stack([reference_region(m) for m in maps]))


def test_salient_region_has_no_gradient() -> None:
    maps = torch.rand(2, 8, 8, requires_grad=True)
    assert not salient_region(maps).requires_grad


# ---------------------------------------------------------------- spatial coherence


@pytest.mark.parametrize("kernel_size", [3, 5, 9])
@pytest.mark.parametrize("kind", ["uniform", "relu", "ties", "blobs"])
def test_sc_equals_loop(kind: str, kernel_size: int) -> None:
    maps = random_maps(kind, 6, (6, 7), seed=kernel_size).reshape(2, 3, 6, 7)
    ours = spatial_coherence(torch.from_numpy(maps), kernel_size).item()
    assert ours == pytest.approx(reference_sc(maps, kernel_size), rel=1e-12, abs=1e-12)


def test_sc_hand_computed_block() -> None:
    """A 5 × 5 block of ones erodes to 3 × 3; with k = 3 every ordered pair (block, not block)
    of neighbours adds 1: corners have 5 such neighbours, edge centres 3, twice over: 64."""
    single = np.zeros((9, 9))
    single[2:7, 2:7] = 1.0
    maps = torch.from_numpy(single)[None, None]
    assert salient_region(maps[0]).sum().item() == 9
    assert spatial_coherence(maps, 3).item() == 64.0


@pytest.mark.parametrize("kernel_size", [3, 5, 9])
def test_sc_constant_inside_region_has_border_contributions(kernel_size: int) -> None:
    single = np.ones((9, 9))
    single[0, 0] = 0.0  # the region is the 7 × 7 interior, constant 1
    maps = single[None, None]
    ours = spatial_coherence(torch.from_numpy(maps), kernel_size).item()
    assert ours > 0
    assert ours == pytest.approx(reference_sc(maps, kernel_size), rel=1e-12)


def test_sc_float32_close_to_float64_and_batch_mean() -> None:
    maps = torch.from_numpy(random_maps("blobs", 12, (16, 16), seed=5)).reshape(4, 3, 16, 16)
    exact = spatial_coherence(maps, 9)
    assert spatial_coherence(maps.float(), 9).item() == pytest.approx(exact.item(), rel=1e-4)
    per_image = [spatial_coherence(maps[b : b + 1], 9) for b in range(4)]
    assert exact.item() == pytest.approx(torch.stack(per_image).mean().item(), rel=1e-12)


def test_sc_gradient_only_inside_region() -> None:
    maps = torch.from_numpy(random_maps("blobs", 6, (8, 8), seed=9)).reshape(2, 3, 8, 8)
    maps.requires_grad_(True)
    spatial_coherence(maps, 5).backward()
    region = salient_region(maps.detach().reshape(6, 8, 8)).reshape(2, 3, 8, 8)
    assert (maps.grad[~region] == 0).all()
    assert region.any() and (maps.grad[region] != 0).all()


# ---------------------------------------------------------------- gradients


def _loss(name: str, saliency: torch.Tensor) -> torch.Tensor:
    return class_distinctiveness(saliency) if name == "cd" else spatial_coherence(saliency, 3)


@pytest.mark.parametrize("name", ["cd", "sc"])
def test_gradients_reach_maps_and_network(name: str) -> None:
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(2, 3, 3), torch.nn.ReLU())
    smooth = torch.nn.functional.interpolate(torch.randn(4, 2, 3, 3), size=(10, 10), mode="bicubic")
    saliency = net(smooth)  # (4, 3, 8, 8); smooth enough to keep a region after erosion
    saliency.retain_grad()
    value = _loss(name, saliency)
    value.backward()
    assert torch.isfinite(value) and value.item() > 0
    assert torch.isfinite(saliency.grad).all() and saliency.grad.abs().sum() > 0
    for parameter in net.parameters():
        assert torch.isfinite(parameter.grad).all() and parameter.grad.abs().sum() > 0


# ---------------------------------------------------------------- module forms


@pytest.mark.parametrize("eps", [0.0, -1e-8, float("nan"), float("inf"), "1e-8", True])
def test_cd_module_validates_eps(eps: object) -> None:
    with pytest.raises(ValueError, match="eps"):
        ClassDistinctivenessLoss(eps=eps)  # type: ignore[arg-type]


@pytest.mark.parametrize("kernel_size", [1, 2, 4, 0, -3, 3.0, True])
def test_sc_module_validates_kernel_size(kernel_size: object) -> None:
    with pytest.raises(ValueError, match="kernel_size"):
        SpatialCoherenceLoss(kernel_size=kernel_size)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="kernel_size"):
        spatial_coherence(torch.rand(1, 2, 8, 8), kernel_size)  # type: ignore[arg-type]


@pytest.mark.parametrize("module", [ClassDistinctivenessLoss(), SpatialCoherenceLoss()])
@pytest.mark.parametrize("shape", [(8, 8), (2, 8, 8), (1, 2, 3, 8, 8)])
def test_modules_validate_input_shape(module: torch.nn.Module, shape: tuple[int, ...]) -> None:
    with pytest.raises(ValueError, match=r"4-D \(B, C, h, w\); got shape"):
        module(torch.rand(shape))


def test_cd_module_needs_two_classes() -> None:
    with pytest.raises(ValueError, match=r"at least 2 classes.*got C=1"):
        ClassDistinctivenessLoss()(torch.rand(2, 1, 8, 8))


def test_modules_equal_functions() -> None:
    maps = torch.rand(2, 3, 8, 8)
    assert torch.equal(ClassDistinctivenessLoss(1e-6)(maps), class_distinctiveness(maps, 1e-6))
    assert torch.equal(SpatialCoherenceLoss(5)(maps), spatial_coherence(maps, 5))
    assert "kernel_size=5" in repr(SpatialCoherenceLoss(5))
