"""Saliency agreement: how well a saliency map localises a finding, against its expert mask.

Following the SIBnet paper's protocol, one ``(H, W)`` map at input resolution is

1. scaled to [0, 1] (min–max; a constant map becomes all zeros),
2. binarised: Otsu's threshold (``"otsu"``, scikit-image), a fixed threshold in [0, 1]
   (a float), or the top k per cent of pixels (``"top10%"``); foreground is ``> threshold``,
3. replaced by the convex hull of its foreground pixel centres (``scipy.spatial.ConvexHull``,
   default options), rasterised: a pixel is inside if its centre lies in the hull (boundary
   included),

and the hull mask is scored against the ground-truth mask with Dice, HD95 and SSIM. The same
scores on the binarised map without the hull are reported too, and three scores of the map
itself, without binarisation:

- the **pointing game** (Zhang et al., ECCV 2016): 1 if the map's maximum lies in the mask,
  else 0; when several pixels share the maximum (a constant map, a plateau), the fraction of
  them inside the mask (the expected hit of a random tie-break: a uniform map scores the mask's
  area fraction, its chance level);
- the **energy-based pointing game** (Wang et al., Score-CAM, CVPR-W 2020): the fraction of
  the map's mass ``Σ max(map, 0)`` that lies inside the mask (``energy_lesion``), and the
  fraction inside the body (``energy_body``, with a body mask, see :func:`body_mask`): maps
  that sit in the background or the image corners score low on both. NaN for a map with no
  positive mass;
- ``map_max``, the map's maximum before any scaling, so a negligible map (min–max scaling
  turns a map of magnitude 1e-7 into a full-range one) can be told from a confident one.

**SSIM caveat.** SSIM of two binary masks is the paper's protocol and is reported as such, but
it rewards empty and small predictions: against a nodule-sized mask an empty prediction scores
about 0.99, a completely missed disc about 0.98, and a hull that contains the lesion about 0.57
(the background dominates the windowed means). The report shows what an empty map and a prior
map score beside it, and draws no localisation verdict from it.

Degenerate cases (documented here, tested):

- **empty binarisation** (e.g. a constant map): the hull is empty;
- **fewer than three foreground pixels, or all collinear** (Qhull cannot build a 2-D hull):
  the hull mask is the foreground itself (the hull of collinear pixel centres is the segment
  through them, which those pixels already rasterise);
- **empty prediction or empty ground truth**: Dice is 1 if both are empty, else 0; HD95 is 0
  if both are empty and NaN (undefined) if exactly one is — summaries count NaNs separately;
  SSIM is always defined.

Dice and HD95 (pixels, or physical units with ``spacing``) are :mod:`sibnet.metrics.masks`'s.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np
from scipy import ndimage
from scipy.spatial import ConvexHull, QhullError
from skimage.filters import threshold_otsu
from skimage.metrics import structural_similarity

from sibnet.metrics.masks import dice, hd95

__all__ = [
    "binarise",
    "body_mask",
    "check_threshold",
    "convex_hull_mask",
    "dice",
    "energy_fraction",
    "hd95",
    "pointing_game",
    "saliency_agreement",
    "scale_to_unit",
]

_TOP = re.compile(r"^top(\d+(?:\.\d+)?)%$")


def check_threshold(threshold: str | float) -> str | float:
    """Return ``threshold`` if it is ``"otsu"``, a number in [0, 1] or ``"top<k>%"``.

    Raises:
        ValueError: anything else, naming what is accepted.
    """
    if isinstance(threshold, int | float) and not isinstance(threshold, bool):
        if not 0.0 <= threshold <= 1.0:
            raise ValueError(f"a fixed threshold must lie in [0, 1], got {threshold}")
        return threshold
    match = _TOP.match(str(threshold))
    if threshold == "otsu" or (match and 0 < float(match.group(1)) <= 100):
        return threshold
    raise ValueError(
        f"threshold must be 'otsu', a number in [0, 1] or 'top<k>%' (0 < k <= 100); "
        f"got {threshold!r}"
    )


def scale_to_unit(saliency: np.ndarray) -> np.ndarray:
    """Min–max scale an ``(H, W)`` map to [0, 1] (float64); a constant map becomes all zeros."""
    saliency = np.asarray(saliency, dtype=np.float64)
    low, high = saliency.min(), saliency.max()
    return np.zeros_like(saliency) if high == low else (saliency - low) / (high - low)


def binarise(saliency: np.ndarray, threshold: str | float = "otsu") -> np.ndarray:
    """Scale an ``(H, W)`` map to [0, 1] and threshold it; returns an ``(H, W)`` bool mask."""
    threshold = check_threshold(threshold)
    saliency = np.asarray(saliency, dtype=np.float64)
    if saliency.ndim != 2:
        raise ValueError(f"saliency must be an (H, W) map, got shape {saliency.shape}")
    if not np.isfinite(saliency).all():
        raise ValueError("saliency contains NaN or infinity")
    if saliency.min() == saliency.max():
        return np.zeros(saliency.shape, dtype=bool)
    scaled = scale_to_unit(saliency)
    if threshold == "otsu":
        return scaled > threshold_otsu(scaled)
    if isinstance(threshold, str):  # top<k>%
        keep = max(1, round(scaled.size * float(_TOP.match(threshold).group(1)) / 100))
        cut = np.sort(scaled, axis=None)[-keep]
        return scaled >= cut
    return scaled > threshold


def convex_hull_mask(foreground: np.ndarray) -> np.ndarray:
    """Rasterised convex hull of the foreground pixel centres of an ``(H, W)`` bool mask.

    Fewer than three pixels, or collinear ones, give the foreground itself (see the module
    docstring).
    """
    return _hull(foreground)[0]


def _hull(foreground: np.ndarray) -> tuple[np.ndarray, bool]:
    """``(hull mask, degenerate)``; degenerate: 1–2 pixels or collinear ones."""
    points = np.argwhere(foreground)
    if len(points) < 3:
        return foreground.copy(), len(points) > 0
    try:
        hull = ConvexHull(points)
    except QhullError:  # all points collinear: the hull is a segment
        return foreground.copy(), True
    (r0, c0), (r1, c1) = points.min(axis=0), points.max(axis=0)
    rows, cols = np.mgrid[r0 : r1 + 1, c0 : c1 + 1]
    grid = np.stack([rows.ravel(), cols.ravel()], axis=1).astype(np.float64)
    inside = (grid @ hull.equations[:, :2].T + hull.equations[:, 2] <= 1e-9).all(axis=1)
    mask = np.zeros_like(foreground, dtype=bool)
    mask[r0 : r1 + 1, c0 : c1 + 1] = inside.reshape(rows.shape)
    return mask, False


def body_mask(image: np.ndarray, smoothing: float = 2.0) -> np.ndarray:
    """The body (foreground) of an ``(H, W)`` radiograph: an ``(H, W)`` bool mask.

    The image is smoothed (Gaussian, ``smoothing`` px), thresholded at half its Otsu threshold
    (dark air against brighter tissue; half, so the dark lungs stay inside), the largest
    connected component kept and its holes filled. It needs no annotation, so it exists for
    every dataset; on real radiographs it is an approximation (collimation, labels and
    devices can join it).
    """
    smooth = ndimage.gaussian_filter(np.asarray(image, dtype=np.float64), smoothing)
    if smooth.max() == smooth.min():
        return np.ones(smooth.shape, dtype=bool)
    labels, count = ndimage.label(smooth > 0.5 * threshold_otsu(smooth))
    if count == 0:
        return np.ones(smooth.shape, dtype=bool)
    largest = 1 + int(np.argmax(np.bincount(labels.ravel())[1:]))
    return ndimage.binary_fill_holes(labels == largest)


def pointing_game(saliency: np.ndarray, mask: np.ndarray) -> float:
    """Fraction of the ``(H, W)`` map's maximal pixels that lie in ``mask`` (1 or 0 unless
    the maximum is shared)."""
    peaks = saliency == saliency.max()
    return float(mask[peaks].mean())


def energy_fraction(saliency: np.ndarray, region: np.ndarray) -> float:
    """``Σ_region max(map, 0) / Σ max(map, 0)`` of an ``(H, W)`` map; NaN without mass."""
    mass = np.clip(saliency, 0.0, None)
    total = mass.sum()
    return float(mass[region].sum() / total) if total > 0 else float("nan")


def _scores(prediction: np.ndarray, truth: np.ndarray, spacing) -> dict[str, float]:
    return {
        "dice": dice(prediction, truth),
        "hd95": hd95(prediction, truth, spacing),
        "ssim": float(
            structural_similarity(
                prediction.astype(np.float64), truth.astype(np.float64), data_range=1.0
            )
        ),
    }


def saliency_agreement(
    saliency: np.ndarray,
    mask: np.ndarray,
    *,
    threshold: str | float = "otsu",
    spacing: tuple[float, float] | None = None,
    body: np.ndarray | None = None,
) -> dict[str, Any]:
    """Agreement of one saliency map with one ground-truth mask (see the module docstring).

    Args:
        saliency: ``(H, W)`` float map at the mask's resolution.
        mask: ``(H, W)`` bool ground truth.
        threshold: ``"otsu"``, a fixed threshold in [0, 1], or ``"top<k>%"``.
        spacing: pixel spacing (row, column) for HD95 in physical units; pixels if ``None``.
        body: optional ``(H, W)`` bool body mask for ``energy_body`` (NaN without it).

    Returns:
        ``dice``, ``hd95``, ``ssim`` of the hull mask; ``dice_raw``, ``hd95_raw``,
        ``ssim_raw`` of the binarised map; ``pointing_hit`` (float: 1, 0, or the share of tied
        maxima in the mask); ``energy_lesion``, ``energy_body``; ``map_max``;
        ``empty_binarisation`` and ``hull_degenerate`` flags; ``hull_fraction`` (hull area /
        image area).
    """
    mask = np.asarray(mask, dtype=bool)
    saliency = np.asarray(saliency, dtype=np.float64)
    if mask.shape != saliency.shape:
        raise ValueError(
            f"saliency {saliency.shape} and mask {mask.shape} must have the same (H, W) shape"
        )
    foreground = binarise(saliency, threshold)
    hull, degenerate = _hull(foreground)
    points = int(foreground.sum())
    if body is not None and np.shape(body) != mask.shape:
        raise ValueError(f"body {np.shape(body)} and mask {mask.shape} must have the same shape")
    result: dict[str, Any] = _scores(hull, mask, spacing)
    result.update({f"{k}_raw": v for k, v in _scores(foreground, mask, spacing).items()})
    result.update(
        {
            "pointing_hit": pointing_game(saliency, mask),
            "energy_lesion": energy_fraction(saliency, mask),
            "energy_body": (
                float("nan") if body is None else energy_fraction(saliency, np.asarray(body, bool))
            ),
            "map_max": float(saliency.max()),
            "empty_binarisation": points == 0,
            "hull_degenerate": degenerate,
            "hull_fraction": float(hull.mean()),
        }
    )
    return result
