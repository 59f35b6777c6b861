"""Segmentation by transfer: a classifier's encoder under a newly trained U-Net-style decoder.

The paper's transfer recipe (SIBnet, Mahapatra et al. 2022): the encoder of a trained
classifier is reused, frozen, and only a decoder is trained for segmentation. The encoder is the
classifier itself, split into sequential stages (:func:`encoder_stages`) made of the
classifier's *own* submodules — no weights are copied — so attention blocks inserted by
:func:`sibnet.models.attention.add_attention` come along.

Stage taps, with the stride (relative to the input) and channels of each stage's output, as
measured with MONAI 1.6 and one input channel:

- ``resnet10_small``: ``conv1+bn1+act`` (2, 16) · ``layer1`` (2, 16) · ``layer2`` (4, 32) ·
  ``layer3`` (8, 64) · ``layer4`` (16, 128).
- ``resnet18``: ``conv1+bn1+act`` (1, 64) · ``maxpool+layer1`` (2, 64) · ``layer2`` (4, 128) ·
  ``layer3`` (8, 256) · ``layer4`` (16, 512). MONAI's ``ResNet`` defaults to a stride-1 stem
  (``conv1_t_stride=1``) and ``ARCHITECTURES["resnet18"]`` does not override it, so the
  network's output stride is 16, not 32.
- ``densenet121``: ``conv0+norm0+relu0`` (2, 64) · ``pool0+denseblock1`` (4, 256) ·
  ``transition1+denseblock2`` (8, 512) · ``transition2+denseblock3`` (16, 1024) ·
  ``transition3+denseblock4+norm5+ReLU`` (32, 1024).

Strides and channels are measured by a dummy forward pass, not hard-coded. DenseNet's last stage
ends in a fresh, parameter-free ReLU because MONAI applies one after ``norm5`` in
``class_layers``; so every stage's output is exactly the activation the classifier computes.

The decoder (:class:`Segmenter`) starts from the deepest stage and, for each shallower stride,
resizes its input to the skip feature of that stride (×2 bilinear; any size mismatch is absorbed
the same way), concatenates the skip and applies two 3×3 conv + BatchNorm + ReLU. Where several
stages share a stride (``resnet10_small``'s stem and ``layer1``), the deepest one is the skip.
Skips have stride >= 2: a stride-1 feature (``resnet18``'s stem) would put the decoder's widest
convolutions at full resolution for little gain. A 1×1 convolution gives one logit map per
structure at the shallowest skip's stride (2), bilinearly resized to the input.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from monai.losses import DiceLoss
from monai.networks.nets.densenet import DenseNet
from monai.networks.nets.resnet import ResNet
from torch import nn

from sibnet.files import atomic_file
from sibnet.models.classifier import (
    ARCHITECTURES,
    attention_model_args,
    build_classifier,
    check_attention_args,
    read_checkpoint,
)

__all__ = [
    "SEGMENTER_FORMAT",
    "SEGMENTER_MODES",
    "DiceBCELoss",
    "Segmenter",
    "encoder_stages",
    "load_segmenter",
    "save_segmenter",
    "segmentation_loss",
]

SEGMENTER_MODES: tuple[str, ...] = ("frozen", "finetune", "scratch")

_PROBE_SIZE = 64  # side of the dummy input that measures strides (divisible by 32)
_MIN_SKIP_STRIDE = 2  # no full-resolution skip: the decoder stops at stride 2


def _resnet_stages(model: ResNet) -> list[nn.Module]:
    stem = nn.Sequential(model.conv1, model.bn1, model.act)
    first = model.layer1 if model.no_max_pool else nn.Sequential(model.maxpool, model.layer1)
    return [stem, first, model.layer2, model.layer3, model.layer4]


def _densenet_stages(model: DenseNet) -> list[nn.Module]:
    f = model.features
    return [
        nn.Sequential(f.conv0, f.norm0, f.relu0),
        nn.Sequential(f.pool0, f.denseblock1),
        nn.Sequential(f.transition1, f.denseblock2),
        nn.Sequential(f.transition2, f.denseblock3),
        nn.Sequential(f.transition3, f.denseblock4, f.norm5, nn.ReLU()),
    ]


def encoder_stages(
    classifier: nn.Module, architecture: str
) -> tuple[nn.ModuleList, list[int], list[int]]:
    """Split a classifier from ``build_classifier`` into sequential feature stages.

    The stages hold the classifier's own submodules (wrapped in ``nn.Sequential`` where a stage
    spans several), so they share its parameters, buffers and attention blocks; the classification
    head (pooling and linear layer) is left out. Applying the stages one after the other to an
    image ``(B, C_in, H, W)`` gives feature maps ``(B, channels[i], H / strides[i],
    W / strides[i])``, the last one being the map the classifier pools.

    Channels and strides are measured with one dummy ``(1, C_in, 64, 64)`` forward pass in eval
    mode under ``torch.no_grad()``; the modules' train/eval flags are restored afterwards and no
    BatchNorm statistic changes.

    Args:
        classifier: a MONAI ``ResNet`` or ``DenseNet121`` built by
            :func:`sibnet.models.classifier.build_classifier` (with or without attention).
        architecture: the key of :data:`~sibnet.models.classifier.ARCHITECTURES` it was built
            with.

    Returns:
        ``(stages, channels, strides)``: the stages, and for each stage output its channel count
        and its stride relative to the input (non-decreasing).

    Raises:
        ValueError: unknown ``architecture``, or a classifier that is not of that kind.
    """
    if architecture not in ARCHITECTURES:
        raise ValueError(
            f"unknown architecture {architecture!r}; accepted: {sorted(ARCHITECTURES)}"
        )
    expected = DenseNet if architecture == "densenet121" else ResNet
    if not isinstance(classifier, expected):
        raise ValueError(
            f"architecture {architecture!r} expects a MONAI {expected.__name__}, got a "
            f"{type(classifier).__name__}"
        )
    if isinstance(classifier, DenseNet):
        stages = nn.ModuleList(_densenet_stages(classifier))
    else:
        stages = nn.ModuleList(_resnet_stages(classifier))

    first_conv = next(m for m in stages.modules() if isinstance(m, nn.Conv2d))
    reference = first_conv.weight
    flags = {module: module.training for module in stages.modules()}
    stages.eval()
    try:
        x = torch.zeros(
            1,
            first_conv.in_channels,
            _PROBE_SIZE,
            _PROBE_SIZE,
            device=reference.device,
            dtype=reference.dtype,
        )
        channels: list[int] = []
        strides: list[int] = []
        with torch.no_grad():
            for stage in stages:
                x = stage(x)
                channels.append(x.shape[1])
                strides.append(_PROBE_SIZE // x.shape[-1])
    finally:
        for module, training in flags.items():
            module.training = training
    return stages, channels, strides


class _DecoderBlock(nn.Module):
    """Resize to the skip, concatenate it, then two 3×3 conv + BatchNorm + ReLU.

    Shapes:
        ``x`` ``(B, C_x, h, w)`` and ``skip`` ``(B, C_s, H_s, W_s)`` → ``(B, C_out, H_s, W_s)``.
    """

    def __init__(self, in_channels: int, skip_channels: int, out_channels: int) -> None:
        super().__init__()
        self.convs = nn.Sequential(
            nn.Conv2d(in_channels + skip_channels, out_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
        )

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
        return self.convs(torch.cat([x, skip], dim=1))


class Segmenter(nn.Module):
    """A classifier's encoder with a U-Net-style decoder: images to per-structure logits.

    Modes:

    - ``"frozen"`` — the paper's transfer recipe. Every encoder parameter gets
      ``requires_grad=False``; the encoder always stays in eval mode (:meth:`train` leaves it
      there, so BatchNorm running statistics never change) and runs under ``torch.no_grad()``
      with its features detached, so no backward pass goes through it. Only the decoder trains.
    - ``"finetune"`` — encoder and decoder both train (the encoder from the trained weights).
    - ``"scratch"`` — the same as ``"finetune"``; the difference is the classifier passed in, a
      freshly initialised one, so this is the no-transfer baseline.

    The encoder stages are the classifier's own modules (:func:`encoder_stages`): freezing and
    training change the classifier passed in. Its classification head is not part of the
    segmenter. The segmenter starts in train mode (:meth:`train` is called on construction).

    Args:
        classifier: a network from :func:`~sibnet.models.classifier.build_classifier`.
        architecture: the architecture it was built with.
        num_outputs: number of structures ``K`` (one independent sigmoid channel each).
        mode: one of :data:`SEGMENTER_MODES`.
        max_decoder_channels: width cap of the decoder blocks; each block is as wide as its skip
            feature, capped at this value.

    Shapes:
        input ``(B, C_in, H, W)`` → logits ``(B, K, H, W)``. ``H`` and ``W`` should be divisible
        by the encoder's total stride ``strides[-1]`` (16 for ``resnet10_small`` and
        ``resnet18``, 32 for ``densenet121``); other sizes work too, the decoder resizing to each
        skip's size.
    """

    def __init__(
        self,
        classifier: nn.Module,
        architecture: str,
        num_outputs: int,
        *,
        mode: str,
        max_decoder_channels: int = 128,
    ) -> None:
        super().__init__()
        if mode not in SEGMENTER_MODES:
            raise ValueError(f"unknown mode {mode!r}; accepted: {list(SEGMENTER_MODES)}")
        if num_outputs < 1:
            raise ValueError(f"num_outputs must be >= 1, got {num_outputs}")
        if max_decoder_channels < 1:
            raise ValueError(f"max_decoder_channels must be >= 1, got {max_decoder_channels}")
        self.mode = mode
        self.architecture = architecture
        self.encoder, self.channels, self.strides = encoder_stages(classifier, architecture)
        if mode == "frozen":
            for parameter in self.encoder.parameters():
                parameter.requires_grad_(False)

        # Skips, deepest first: for every stride from 2 up to (excluding) the deepest stage's,
        # the deepest stage of that stride.
        deepest_of_stride = {stride: i for i, stride in enumerate(self.strides)}
        bottom = len(self.strides) - 1
        self.skip_indices: list[int] = sorted(
            (
                i
                for s, i in deepest_of_stride.items()
                if _MIN_SKIP_STRIDE <= s < self.strides[bottom]
            ),
            reverse=True,
        )
        blocks = []
        width = self.channels[bottom]
        for i in self.skip_indices:
            out = min(self.channels[i], max_decoder_channels)
            blocks.append(_DecoderBlock(width, self.channels[i], out))
            width = out
        self.decoder = nn.ModuleList(blocks)
        self.head = nn.Conv2d(width, num_outputs, kernel_size=1)
        self.num_outputs = num_outputs
        self.max_decoder_channels = max_decoder_channels
        self.train()

    @property
    def frozen(self) -> bool:
        """Whether the encoder is frozen (``mode == "frozen"``)."""
        return self.mode == "frozen"

    def train(self, mode: bool = True) -> Segmenter:
        """Set train/eval mode; a frozen encoder stays in eval mode regardless."""
        super().train(mode)
        if self.frozen:
            self.encoder.eval()
        return self

    def encode(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Feature maps of every stage: ``(B, C_in, H, W)`` → ``[(B, channels[i], H/s_i, W/s_i)]``.

        A frozen encoder runs under ``torch.no_grad()`` and its features are detached.
        """
        with torch.no_grad() if self.frozen else contextlib.nullcontext():
            features = []
            for stage in self.encoder:
                x = stage(x)
                features.append(x)
        if self.frozen:
            features = [feature.detach() for feature in features]
        return features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Segment ``x`` ``(B, C_in, H, W)`` into logits ``(B, K, H, W)``."""
        features = self.encode(x)
        y = features[-1]
        for block, i in zip(self.decoder, self.skip_indices, strict=True):
            y = block(y, features[i])
        y = self.head(y)
        return F.interpolate(y, size=x.shape[-2:], mode="bilinear", align_corners=False)

    def decoder_parameters(self) -> Iterator[nn.Parameter]:
        """Parameters of the decoder blocks and the output head."""
        yield from self.decoder.parameters()
        yield from self.head.parameters()

    def trainable_parameters(self) -> list[nn.Parameter]:
        """The parameters to optimise: the decoder's only when frozen, else all of them."""
        if self.frozen:
            return list(self.decoder_parameters())
        return list(self.parameters())


class DiceBCELoss(nn.Module):
    """Dice loss plus binary cross-entropy, for independent per-structure sigmoid outputs.

    ``lambda_dice · DiceLoss(sigmoid=True) + lambda_bce · BCEWithLogits``: the Dice term is
    MONAI's (soft Dice per image and per structure, averaged; ``include_background=True``, since
    every channel is a structure), the BCE term is averaged over all pixels and structures.

    MONAI 1.6's ``DiceCELoss(sigmoid=True)`` is *not* used: its cross-entropy part is
    ``BCEWithLogitsLoss`` only for a single output channel, and a softmax ``CrossEntropyLoss``
    across channels for ``K > 1``, which would make overlapping structures compete.

    Shapes:
        ``logits`` ``(B, K, H, W)`` and binary ``target`` ``(B, K, H, W)`` (any dtype) → scalar.
    """

    def __init__(self, lambda_dice: float = 1.0, lambda_bce: float = 1.0) -> None:
        super().__init__()
        if lambda_dice < 0 or lambda_bce < 0:
            raise ValueError(
                f"lambda_dice and lambda_bce must be >= 0, got {lambda_dice}, {lambda_bce}"
            )
        self.lambda_dice = lambda_dice
        self.lambda_bce = lambda_bce
        self.dice = DiceLoss(sigmoid=True, include_background=True)
        self.bce = nn.BCEWithLogitsLoss()

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if logits.shape != target.shape:
            raise ValueError(
                f"logits {tuple(logits.shape)} and target {tuple(target.shape)} must have the "
                "same shape (B, K, H, W): one binary mask per structure"
            )
        target = target.to(dtype=logits.dtype)
        return self.lambda_dice * self.dice(logits, target) + self.lambda_bce * self.bce(
            logits, target
        )


def segmentation_loss(lambda_dice: float = 1.0, lambda_bce: float = 1.0) -> DiceBCELoss:
    """The segmentation training loss: :class:`DiceBCELoss` (Dice + BCE on sigmoid logits)."""
    return DiceBCELoss(lambda_dice=lambda_dice, lambda_bce=lambda_bce)


SEGMENTER_FORMAT = "sibnet-segmenter/1"


def save_segmenter(
    path: str | Path,
    model: Segmenter,
    *,
    attention: str,
    reduction: int = 16,
    min_hidden: int = 8,
    classifier_classes: int,
    structures: list[str],
    epoch: int,
    metrics: dict[str, float],
    classifier_sha256: str | None,
    extra: dict[str, Any] | None = None,
) -> None:
    """Write a self-describing segmenter checkpoint atomically (``weights_only``-loadable).

    ``classifier_sha256`` is the lineage: the SHA-256 of the classifier checkpoint file the
    encoder came from (``None`` for ``scratch``, whose encoder started from random weights).
    Identical weights give identical bytes. ``reduction`` and ``min_hidden`` are the encoder's
    attention settings (stored with attention, as in
    :func:`~sibnet.models.classifier.save_checkpoint`).
    """
    payload = {
        "format": SEGMENTER_FORMAT,
        "architecture": model.architecture,
        "mode": model.mode,
        "model_args": {
            "attention": attention,
            **attention_model_args(model, attention, reduction, min_hidden),
            "classifier_classes": classifier_classes,
            "num_outputs": model.num_outputs,
            "max_decoder_channels": model.max_decoder_channels,
        },
        "structures": list(structures),
        "epoch": epoch,
        "metrics": dict(metrics),
        "classifier_sha256": classifier_sha256,
        "state_dict": model.state_dict(),
        "extra": dict(extra or {}),
    }
    with atomic_file(path) as tmp, open(tmp, "wb") as handle:  # a handle: see save_checkpoint
        torch.save(payload, handle)


def load_segmenter(path: str | Path) -> tuple[Segmenter, dict[str, Any]]:
    """Load a checkpoint of :func:`save_segmenter`: ``(segmenter in eval mode, checkpoint)``.

    Raises:
        CheckpointError: the file is missing, unreadable, or not a segmenter checkpoint, or
            one with attention from before ``reduction`` and ``min_hidden`` were stored.
    """
    checkpoint = read_checkpoint(path, SEGMENTER_FORMAT, "segmenter")
    args = checkpoint["model_args"]
    check_attention_args(path, args)
    widths = {key: args[key] for key in ("reduction", "min_hidden") if key in args}
    classifier = build_classifier(
        checkpoint["architecture"],
        args["classifier_classes"],
        attention=args["attention"],
        **widths,
    )
    model = Segmenter(
        classifier,
        checkpoint["architecture"],
        args["num_outputs"],
        mode=checkpoint["mode"],
        max_decoder_channels=args["max_decoder_channels"],
    )
    model.load_state_dict(checkpoint["state_dict"])
    return model.eval(), checkpoint
