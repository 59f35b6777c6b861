"""Overlap and boundary distance between two binary masks: Dice and HD95.

Shared by saliency agreement (:mod:`sibnet.metrics.saliency`) and segmentation
(:mod:`sibnet.stages.segment`). Conventions for empty masks: Dice is 1 when both masks are
empty and 0 when exactly one is; HD95 is 0 when both are empty and NaN (undefined) when exactly
one is — summaries count NaNs apart.

HD95 is the symmetric 95th percentile Hausdorff distance between the two masks' boundaries
(boundary = mask XOR its binary erosion, 3×3 cross), ``max(p95(d(A→B)), p95(d(B→A)))`` over
boundary pixels, as MONAI's ``compute_hausdorff_distance(..., percentile=95)``; in pixels, or
in physical units with ``spacing`` (row, column).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

__all__ = ["dice", "hd95"]


def dice(prediction: np.ndarray, truth: np.ndarray) -> float:
    """Dice coefficient ``2|A∩B| / (|A| + |B|)``; 1 when both masks are empty."""
    total = prediction.sum() + truth.sum()
    if total == 0:
        return 1.0
    return float(2.0 * np.logical_and(prediction, truth).sum() / total)


def _boundary(mask: np.ndarray) -> np.ndarray:
    return mask ^ ndimage.binary_erosion(mask, border_value=0)


def hd95(
    prediction: np.ndarray, truth: np.ndarray, spacing: tuple[float, float] | None = None
) -> float:
    """Symmetric 95th-percentile Hausdorff distance between two ``(H, W)`` masks' boundaries.

    0 when both masks are empty, NaN when exactly one is (undefined).
    """
    if not prediction.any() and not truth.any():
        return 0.0
    if not prediction.any() or not truth.any():
        return float("nan")
    sampling = (1.0, 1.0) if spacing is None else tuple(float(s) for s in spacing)
    edges = _boundary(prediction), _boundary(truth)
    directed = []
    for source, target in (edges, edges[::-1]):
        distance = ndimage.distance_transform_edt(~target, sampling=sampling)
        directed.append(np.percentile(distance[source], 95))
    return float(max(directed))
