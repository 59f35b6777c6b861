"""Classifiers (MONAI networks) and self-describing checkpoints.

Every architecture ends in global average pooling and one linear layer, takes one input
channel, and is built from a name plus keyword arguments that the checkpoint stores, so a
checkpoint loads without the configuration that made it.

Architectures (``ARCHITECTURES``):

- ``resnet10_small`` — the CPU default: MONAI ``ResNet`` with one basic block per stage, widths
  16-32-64-128, a 7×7 stride-2 stem and no max-pool. Output stride 16, so 128×128 inputs give an
  8×8 last feature map: fine enough for Grad-CAM to localise a finding. About 0.3 M parameters.
- ``resnet18`` — MONAI's ResNet-18 with MONAI's default stride-1 7×7 stem, then max-pool
  (output stride 16, so 128×128 inputs give 8×8 maps; torchvision's has 32).
- ``densenet121`` — MONAI's DenseNet-121, the paper's network (output stride 32).

With attention (``se`` or ``cbam``) the checkpoint's ``model_args`` also hold the blocks'
``reduction`` and ``min_hidden``. Attention checkpoints written before those were stored had
bottlenecks of width ``max(1, C // 16)`` and, for CBAM, no batch norm in the spatial gate; they do
not fit the current blocks, and :func:`load_checkpoint` refuses them with a
:class:`CheckpointError` that says to retrain. Checkpoints without attention are unaffected.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch
from monai.networks.nets import DenseNet121, ResNet
from torch import nn

from sibnet.errors import SibnetError
from sibnet.files import atomic_file
from sibnet.models.attention import ATTENTION_KINDS, CBAM, SqueezeExcitation, add_attention

__all__ = [
    "ARCHITECTURES",
    "CHECKPOINT_FORMAT",
    "CheckpointError",
    "attention_model_args",
    "build_classifier",
    "check_attention_args",
    "load_checkpoint",
    "params_hash",
    "read_checkpoint",
    "save_checkpoint",
]

CHECKPOINT_FORMAT = "sibnet-classifier/1"

ARCHITECTURES: dict[str, dict[str, Any]] = {
    "resnet10_small": {
        "block": "basic",
        "layers": [1, 1, 1, 1],
        "block_inplanes": [16, 32, 64, 128],
        "conv1_t_size": 7,
        "conv1_t_stride": 2,
        "no_max_pool": True,
    },
    "resnet18": {
        "block": "basic",
        "layers": [2, 2, 2, 2],
        "block_inplanes": [64, 128, 256, 512],
    },
    "densenet121": {},
}


class CheckpointError(ValueError, SibnetError):
    """A checkpoint is missing, unreadable, or does not fit what the caller expects."""


def build_classifier(
    architecture: str,
    num_classes: int,
    in_channels: int = 1,
    attention: str = "none",
    *,
    reduction: int = 16,
    min_hidden: int = 8,
) -> nn.Module:
    """Build a randomly initialised classifier.

    Args:
        architecture: a key of :data:`ARCHITECTURES`.
        num_classes: number of output logits ``C``.
        in_channels: image channels (1 for radiographs).
        attention: ``"none"``, ``"se"`` or ``"cbam"``: attention blocks inserted into every
            block of the backbone (:func:`sibnet.models.attention.add_attention`).
        reduction: the attention blocks' bottleneck ratio ``r`` (``methods.*.attention_reduction``).
        min_hidden: the floor of their bottleneck width ``min(C, max(min_hidden, C // r))``
            (``methods.*.attention_min_hidden``). Both are ignored under ``attention="none"``.

    Returns:
        A module mapping ``(B, in_channels, H, W)`` images to ``(B, C)`` logits.
    """
    if architecture not in ARCHITECTURES:
        raise ValueError(
            f"unknown architecture {architecture!r}; accepted: {sorted(ARCHITECTURES)}"
        )
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    if attention not in ATTENTION_KINDS:
        raise ValueError(f"unknown attention {attention!r}; accepted: {list(ATTENTION_KINDS)}")
    options = ARCHITECTURES[architecture]
    if architecture == "densenet121":
        model = DenseNet121(spatial_dims=2, in_channels=in_channels, out_channels=num_classes)
    else:
        model = ResNet(
            spatial_dims=2, n_input_channels=in_channels, num_classes=num_classes, **options
        )
    return add_attention(model, attention, reduction=reduction, min_hidden=min_hidden)


def attention_model_args(
    model: nn.Module, attention: str, reduction: int, min_hidden: int
) -> dict[str, int]:
    """The ``model_args`` entries that rebuild ``model``'s attention blocks.

    ``{}`` for ``attention="none"``, else ``{"reduction": ..., "min_hidden": ...}``.

    Raises:
        ValueError: a block of ``model`` was built with other values (its checkpoint would not
            rebuild it).
    """
    if attention == "none":
        return {}
    for module in model.modules():
        if isinstance(module, SqueezeExcitation | CBAM) and (
            (module.reduction, module.min_hidden) != (reduction, min_hidden)
        ):
            raise ValueError(
                f"the model's attention blocks have reduction={module.reduction}, "
                f"min_hidden={module.min_hidden}, but reduction={reduction}, "
                f"min_hidden={min_hidden} were given; pass the values the model was built with"
            )
    return {"reduction": reduction, "min_hidden": min_hidden}


def check_attention_args(path: str | Path, model_args: dict[str, Any]) -> None:
    """Refuse a checkpoint with attention but without ``reduction`` and ``min_hidden``.

    Raises:
        CheckpointError: the checkpoint predates them (bottlenecks of width ``max(1, C // 16)``,
            no spatial batch norm in CBAM), so its weights fit no current network.
    """
    attention = model_args.get("attention", "none")
    missing = [key for key in ("reduction", "min_hidden") if key not in model_args]
    if attention != "none" and missing:
        raise CheckpointError(
            f"{path}: {attention!r} checkpoint without {missing} in its model_args: it was "
            "written by an older sibnet whose attention blocks had bottlenecks of width "
            "max(1, C // 16) and no batch norm in CBAM's spatial gate, which the current blocks "
            "no longer build; retrain it (rerun the train stage for its method)"
        )


def params_hash(section: Any) -> str:
    """SHA-256 of a params section (pydantic model or plain data) as canonical JSON."""
    data = section.model_dump(mode="json") if hasattr(section, "model_dump") else section
    text = json.dumps(data, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def save_checkpoint(
    path: str | Path,
    model: nn.Module,
    *,
    architecture: str,
    num_classes: int,
    in_channels: int,
    attention: str,
    reduction: int = 16,
    min_hidden: int = 8,
    classes: list[str],
    task: str,
    optimizer: torch.optim.Optimizer | None,
    epoch: int,
    metrics: dict[str, float],
    params_sha256: str,
    scheduler_state: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
) -> None:
    """Write a self-describing checkpoint atomically (loadable with ``weights_only=True``).

    The file holds the weights, the optimizer and learning-rate scheduler states, the epoch,
    the arguments that build the network (``architecture``, ``num_classes``, ``in_channels``,
    ``attention``, and with attention its ``reduction`` and ``min_hidden``, which must be those
    the model was built with), the class names and task, the metrics at that epoch and a hash
    of the params that produced it.
    """
    payload = {
        "format": CHECKPOINT_FORMAT,
        "architecture": architecture,
        "model_args": {
            "num_classes": num_classes,
            "in_channels": in_channels,
            "attention": attention,
            **attention_model_args(model, attention, reduction, min_hidden),
        },
        "classes": list(classes),
        "task": task,
        "epoch": epoch,
        "metrics": dict(metrics),
        "params_sha256": params_sha256,
        "state_dict": model.state_dict(),
        "optimizer": None if optimizer is None else optimizer.state_dict(),
        "scheduler": scheduler_state,
        "extra": dict(extra or {}),
    }
    with atomic_file(path) as tmp, open(tmp, "wb") as handle:
        # A file object, not a name: torch would otherwise name the archive's root folder after
        # the (random) temporary file name, and identical checkpoints would differ in bytes.
        torch.save(payload, handle)


def read_checkpoint(path: str | Path, expected_format: str, kind: str) -> dict[str, Any]:
    """Read a sibnet checkpoint dictionary (``weights_only``) and check its ``format``.

    Raises:
        CheckpointError: the file is missing, unreadable, or not a ``kind`` checkpoint.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: {kind} checkpoint not found")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises several types for corrupt or foreign files
        raise CheckpointError(f"{path}: not a readable checkpoint: {error}") from None
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != expected_format:
        raise CheckpointError(
            f"{path}: not a sibnet {kind} checkpoint (expected format {expected_format!r})"
        )
    return checkpoint


def load_checkpoint(
    path: str | Path, *, architecture: str | None = None, attention: str | None = None
) -> tuple[nn.Module, dict[str, Any]]:
    """Load a classifier checkpoint written by :func:`save_checkpoint`.

    Args:
        path: the ``classifier.pt`` file.
        architecture: if given, the architecture the caller expects; a checkpoint of another
            architecture raises :class:`CheckpointError` instead of failing on mismatched weights.
        attention: if given, the attention kind the caller expects (checked likewise).

    Returns:
        ``(model, checkpoint)``: the model in eval mode with the stored weights, and the whole
        checkpoint dictionary.
    """
    path = Path(path)
    checkpoint = read_checkpoint(path, CHECKPOINT_FORMAT, "classifier")
    found = checkpoint["architecture"]
    if architecture is not None and found != architecture:
        raise CheckpointError(
            f"{path}: checkpoint is a {found!r} network, but {architecture!r} was expected"
        )
    found_attention = checkpoint["model_args"].get("attention", "none")
    if attention is not None and found_attention != attention:
        raise CheckpointError(
            f"{path}: checkpoint has attention {found_attention!r}, but {attention!r} was expected"
        )
    check_attention_args(path, checkpoint["model_args"])
    model = build_classifier(found, **checkpoint["model_args"])
    try:
        model.load_state_dict(checkpoint["state_dict"])
    except RuntimeError as error:
        raise CheckpointError(f"{path}: weights do not fit a {found!r} network: {error}") from None
    model.eval()
    return model, checkpoint
