"""Saliency maps: Grad-CAM for every class at once (``gradcam``)."""

from sibnet.saliency.gradcam import (
    CamMode,
    cam_mode,
    default_cam_layer,
    grad_cam,
    logits_and_grad_cam,
    upsample,
)

__all__ = [
    "CamMode",
    "cam_mode",
    "default_cam_layer",
    "grad_cam",
    "logits_and_grad_cam",
    "upsample",
]
