"""A faithfulness term: a class's score must drop when its salient region is erased.

In the spirit of GAIN's attention mining (Li, Wu, Peng, Ernst & Fu, "Tell Me Where to Look:
Guided Attention Inference Network", CVPR 2018). SIBnet's two terms ask the maps of different
classes to differ (CD) and to be smooth inside their salient region (SC). Neither refers to the
image: CD over every class is minimised when each class owns a fixed region of the image,
whatever the finding, and SC is then satisfied by a smooth blob there. On the built-in phantom
that is what training finds: the maps leave the lesions for the border and the background
corners, one place per class. Restricting CD to the classes present does not help, since fixed
regions still keep co-present maps apart.

This term ties each map to the evidence for its class without masks. For image ``b`` and a class
``c`` it has (target 1), the map is upsampled to the image, rectified and divided by its
maximum (``Â``), softened into a mask ``T = sigmoid(ω (Â − σ))`` (GAIN's ``σ = 0.5``,
``ω = 10``), and the image with that region erased, ``I · (1 − T)``, is scored again::

    L_faith = mean over the (b, c) with target 1 of  p_c(I_b · (1 − T_bc))

with ``p`` the softmax (multi-class) or sigmoid (multi-label) probability. Minimising it moves
the map onto whatever the network uses to recognise the class: if the finding survives outside
the map, the class still scores high. The gradient flows through the erased image's forward
pass and through ``T`` into the map.

The erased pass runs in the network's training mode (batch-norm normalises with the erased
batch's statistics, as in GAIN) but leaves the batch-norm running statistics as they were, so
the evaluation-time network has only seen real images. It costs one more forward and backward
pass over the batch (multi-class) or over its positive labels (multi-label).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sibnet.engine import probabilities

__all__ = ["GAIN_OMEGA", "GAIN_SIGMA", "erasure_mask", "faithfulness"]

GAIN_SIGMA = 0.5
"""Threshold of the soft mask on the normalised map (GAIN's σ)."""
GAIN_OMEGA = 10.0
"""Steepness of the soft mask (GAIN's ω)."""


def erasure_mask(maps: Tensor, size: tuple[int, int]) -> Tensor:
    """Soft salient-region masks ``sigmoid(ω (Â − σ))`` at the image size.

    Args:
        maps: ``(N, h, w)`` saliency maps (signed or not); may require grad.
        size: ``(H, W)`` of the images.

    Returns:
        ``(N, H, W)`` masks in ``(0, 1)``; ``Â = relu(map) / max`` after a bilinear upsampling
        (an all-zero map gives ``Â = 0``, an almost-empty mask).
    """
    if maps.ndim != 3:
        raise ValueError(f"maps must be 3-D (N, h, w); got shape {tuple(maps.shape)}")
    up = F.interpolate(maps.unsqueeze(1), size=size, mode="bilinear", align_corners=False)
    up = F.relu(up.squeeze(1))
    peak = up.flatten(1).amax(dim=1).clamp_min(1e-12)[:, None, None]
    return torch.sigmoid(GAIN_OMEGA * (up / peak - GAIN_SIGMA))


@contextlib.contextmanager
def _batchnorm_statistics_kept(model: nn.Module) -> Iterator[None]:
    """Inside, batch-norm layers update copies of their running statistics; on exit the
    originals are put back. (No in-place write: the originals may be saved for backward.)"""
    saved = []
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            for name, buffer in list(module.named_buffers(recurse=False)):
                if buffer is not None:
                    saved.append((module, name, buffer))
                    setattr(module, name, buffer.clone())
    try:
        yield
    finally:
        for module, name, buffer in saved:
            setattr(module, name, buffer)


def faithfulness(
    model: nn.Module, images: Tensor, maps: Tensor, targets: Tensor, task: str
) -> Tensor:
    """``L_faith``: mean probability of each present class after its salient region is erased.

    Args:
        model: the classifier (``(B, C_in, H, W)`` → ``(B, C)`` logits), in training mode.
        images: ``(B, C_in, H, W)``.
        maps: ``(B, C, h, w)`` Grad-CAM maps of every class, in the autograd graph.
        targets: ``(B, C)`` in ``{0, 1}`` (multi-label: ``-1`` unknown, never used).
        task: ``"multiclass"`` or ``"multilabel"``.

    Returns:
        Scalar in ``[0, 1]``; 0 when no image has a positive label.
    """
    if task not in ("multiclass", "multilabel"):
        raise ValueError(f"task must be 'multiclass' or 'multilabel', got {task!r}")
    image_index, class_index = torch.nonzero(targets > 0.5, as_tuple=True)
    if image_index.numel() == 0:
        return maps.sum() * 0.0
    masks = erasure_mask(maps[image_index, class_index], tuple(images.shape[-2:]))
    erased = images[image_index] * (1.0 - masks.unsqueeze(1).to(images.dtype))
    with _batchnorm_statistics_kept(model):
        logits = model(erased).float()
    probs = probabilities(logits, task)
    return probs[torch.arange(len(class_index), device=probs.device), class_index].mean()
