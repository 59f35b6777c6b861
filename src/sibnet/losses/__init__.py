"""Training losses: SIBnet's class distinctiveness and spatial coherence live in ``sibnet``, the
faithfulness term aimed at their collapse in ``faithfulness``."""

from __future__ import annotations

from sibnet.losses.faithfulness import erasure_mask, faithfulness
from sibnet.losses.sibnet import (
    ClassDistinctivenessLoss,
    SpatialCoherenceLoss,
    class_distinctiveness,
    connected_components,
    otsu_threshold,
    salient_region,
    spatial_coherence,
)

__all__ = [
    "ClassDistinctivenessLoss",
    "SpatialCoherenceLoss",
    "class_distinctiveness",
    "connected_components",
    "erasure_mask",
    "faithfulness",
    "otsu_threshold",
    "salient_region",
    "spatial_coherence",
]
