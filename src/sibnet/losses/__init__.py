"""Training losses; SIBnet's class distinctiveness and spatial coherence live in ``sibnet``."""

from __future__ import annotations

from sibnet.losses.sibnet import (
    ClassDistinctivenessLoss,
    SpatialCoherenceLoss,
    class_distinctiveness,
    otsu_threshold,
    salient_region,
    spatial_coherence,
)

__all__ = [
    "ClassDistinctivenessLoss",
    "SpatialCoherenceLoss",
    "class_distinctiveness",
    "otsu_threshold",
    "salient_region",
    "spatial_coherence",
]
