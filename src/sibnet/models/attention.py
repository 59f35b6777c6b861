"""Channel and spatial attention blocks, and their insertion into the sibnet classifiers.

- :class:`SqueezeExcitation` — Hu, Shen & Sun, "Squeeze-and-Excitation Networks", CVPR 2018:
  global average pooling, a bottleneck MLP and a sigmoid give one gate per channel.
- :class:`CBAM` — Woo, Park, Lee & Kweon, "CBAM: Convolutional Block Attention Module",
  ECCV 2018: a channel gate from a shared MLP on the average- *and* max-pooled descriptors, then
  a spatial gate from a k×k convolution (and batch norm) of the channel-wise max and mean maps,
  as in the authors' code (``Jongchan/attention-module``, ``MODELS/cbam.py``).

Bottleneck width. Both MLPs are ``C → h → C`` with ``h = min(C, max(min_hidden, C // r))``
(:func:`bottleneck_width`). The papers' ``r = 16`` was chosen for ImageNet widths 64–2048; on
``resnet10_small``'s 16–128 channels ``max(1, C // 16)`` would leave bottlenecks of width 1 to 8
and handicap the SE and CBAM baselines. The floor ``min_hidden = 8`` follows timm, whose SE and
CBAM round the hidden width to a multiple of 8 (``rd_divisor=8``), so never below 8; the cap
``C`` keeps the MLP a bottleneck (or an identity-width layer) on narrow inputs. Both are set per
method in ``params.yaml`` (``attention_reduction``, ``attention_min_hidden``).

:func:`add_attention` inserts one block of either kind into every block of a network that
:func:`sibnet.models.classifier.build_classifier` returns, in place:

- **ResNet** (MONAI ``ResNetBlock`` / ``ResNetBottleneck``): as in SE-ResNet and CBAM-ResNet,
  the attention recalibrates the residual branch *before* it is added to the identity, i.e.
  ``conv → norm → attention → (+ shortcut) → ReLU``. It is spliced in by replacing the block's
  last normalisation (``bn2`` of the basic block, ``bn3`` of the bottleneck) with
  ``nn.Sequential(norm, attention)``, so MONAI's own ``forward`` stays in charge.
- **DenseNet** (MONAI ``DenseNet121``): one block after each dense block
  (``features.denseblockK`` becomes ``nn.Sequential(dense_block, attention)``), gating the
  block's concatenated output before the transition (or ``norm5``). Attention per dense layer
  would add 58 blocks instead of 4 and multiply the cost on CPU for little gain; the SE paper's
  own non-residual integrations (SE-Inception) likewise attach to the output of a whole module.

Everything else is left as it was: ResNet's ``layer4`` output and DenseNet's ``features`` output
still feed global average pooling unchanged in shape, so Grad-CAM targets stay valid. New
layers use PyTorch's default initialisation and are therefore reproducible under
``torch.manual_seed``. Adding attention changes the state-dict keys (e.g. ``bn2.weight`` becomes
``bn2.0.weight``) and the widths depend on ``reduction`` and ``min_hidden``, so the model must
be rebuilt the same way (kind, ``reduction``, ``min_hidden``) before loading such weights.
"""

from __future__ import annotations

import torch
from monai.networks.nets.densenet import DenseNet
from monai.networks.nets.resnet import ResNet, ResNetBlock, ResNetBottleneck
from torch import nn

__all__ = ["ATTENTION_KINDS", "CBAM", "SqueezeExcitation", "add_attention", "bottleneck_width"]

ATTENTION_KINDS: tuple[str, ...] = ("none", "se", "cbam")


def _check_int(name: str, value: object, *, odd: bool = False) -> None:
    """Raise ``ValueError`` unless ``value`` is an integer >= 1 (and odd when ``odd``)."""
    accepted = "an odd integer >= 1" if odd else "an integer >= 1"
    valid = isinstance(value, int) and not isinstance(value, bool) and value >= 1
    if not valid or (odd and value % 2 == 0):
        raise ValueError(f"{name} must be {accepted}, got {value!r}")


def bottleneck_width(channels: int, reduction: int = 16, min_hidden: int = 8) -> int:
    """Hidden width ``min(C, max(min_hidden, C // r))`` of the channel MLPs.

    E.g. ``C`` = 16, 32, 64, 128 give 8, 8, 8, 8 at the defaults (``r = 16``, floor 8) and
    4, 8, 16, 32 with ``r = 4`` and floor 1. See the module docstring for the choice.

    Raises:
        ValueError: an argument is not an integer >= 1.
    """
    _check_int("channels", channels)
    _check_int("reduction", reduction)
    _check_int("min_hidden", min_hidden)
    return min(channels, max(min_hidden, channels // reduction))


def _bottleneck_mlp(channels: int, hidden: int) -> nn.Sequential:
    """1×1 convolutions ``C → hidden → C`` (with bias) and a ReLU between: ``(B, C, 1, 1)`` in/out.

    On ``(B, C, 1, 1)`` descriptors a 1×1 convolution with bias is the same map as the
    ``nn.Linear`` layers (with bias) of the official SE and CBAM code.
    """
    return nn.Sequential(
        nn.Conv2d(channels, hidden, kernel_size=1),
        nn.ReLU(inplace=True),
        nn.Conv2d(hidden, channels, kernel_size=1),
    )


class SqueezeExcitation(nn.Module):
    """Squeeze-and-excitation block (Hu et al., CVPR 2018).

    ``y = x · σ(W₂ ReLU(W₁ GAP(x)))`` with ``W₁: C → h`` and ``W₂: h → C``,
    ``h = min(C, max(min_hidden, C // r))`` (:func:`bottleneck_width`), implemented as 1×1
    convolutions with bias (``mlp[0]`` and ``mlp[2]``; equivalent to the paper's FC layers).

    Args:
        channels: number of channels ``C`` of the input.
        reduction: bottleneck ratio ``r`` (16 in the paper).
        min_hidden: floor of the bottleneck width (8, timm's ``rd_divisor``).

    Shapes:
        input ``(B, C, H, W)`` → output ``(B, C, H, W)``.
    """

    def __init__(self, channels: int, reduction: int = 16, *, min_hidden: int = 8) -> None:
        super().__init__()
        self.hidden = bottleneck_width(channels, reduction, min_hidden)
        self.channels = channels
        self.reduction = reduction
        self.min_hidden = min_hidden
        self.mlp = _bottleneck_mlp(channels, self.hidden)

    def gate(self, x: torch.Tensor) -> torch.Tensor:
        """Channel gate in ``(0, 1)``: ``(B, C, H, W)`` → ``(B, C, 1, 1)``."""
        return torch.sigmoid(self.mlp(x.mean(dim=(2, 3), keepdim=True)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Rescale each channel of ``x`` ``(B, C, H, W)`` by its gate; same shape out."""
        return x * self.gate(x)

    def extra_repr(self) -> str:
        return (
            f"channels={self.channels}, reduction={self.reduction}, "
            f"min_hidden={self.min_hidden}, hidden={self.hidden}"
        )


class CBAM(nn.Module):
    """Convolutional Block Attention Module (Woo et al., ECCV 2018): channel, then spatial.

    Follows the official code (``Jongchan/attention-module``, ``MODELS/cbam.py``). Channel gate
    ``M_c = σ(MLP(AvgPool(x)) + MLP(MaxPool(x)))`` with one MLP shared by both descriptors
    (``mlp``: 1×1 convolutions with bias ``C → h → C`` as in :class:`SqueezeExcitation`,
    equivalent to the official ``nn.Linear`` layers with bias). Spatial gate
    ``M_s = σ(BN(conv_k×k([max_c(x'), mean_c(x')])))`` with ``x' = x · M_c``: the official
    ``ChannelPool`` (max first, then mean) and ``BasicConv(2, 1, k, padding=k // 2, relu=False,
    bn=True, bias=False)``, i.e. ``spatial`` (conv 2 → 1 channels, no bias) then
    ``spatial_norm`` (``BatchNorm2d(1, eps=1e-5, momentum=0.01, affine=True)``). Output
    ``x' · M_s``.

    Args:
        channels: number of channels ``C`` of the input.
        reduction: MLP bottleneck ratio ``r`` (16 in the paper).
        spatial_kernel: odd kernel size ``k`` of the spatial convolution (7 in the paper).
        min_hidden: floor of the MLP's bottleneck width (8, timm's ``rd_divisor``).

    Shapes:
        input ``(B, C, H, W)`` → output ``(B, C, H, W)``.
    """

    def __init__(
        self, channels: int, reduction: int = 16, spatial_kernel: int = 7, *, min_hidden: int = 8
    ) -> None:
        super().__init__()
        self.hidden = bottleneck_width(channels, reduction, min_hidden)
        _check_int("spatial_kernel", spatial_kernel, odd=True)
        self.channels = channels
        self.reduction = reduction
        self.min_hidden = min_hidden
        self.spatial_kernel = spatial_kernel
        self.mlp = _bottleneck_mlp(channels, self.hidden)
        self.spatial = nn.Conv2d(
            2, 1, kernel_size=spatial_kernel, padding=spatial_kernel // 2, bias=False
        )
        self.spatial_norm = nn.BatchNorm2d(1, eps=1e-5, momentum=0.01, affine=True)

    def channel_gate(self, x: torch.Tensor) -> torch.Tensor:
        """Channel gate in ``(0, 1)``: ``(B, C, H, W)`` → ``(B, C, 1, 1)``."""
        avg = self.mlp(x.mean(dim=(2, 3), keepdim=True))
        peak = self.mlp(x.amax(dim=(2, 3), keepdim=True))
        return torch.sigmoid(avg + peak)

    def spatial_gate(self, x: torch.Tensor) -> torch.Tensor:
        """Spatial gate in ``(0, 1)``: ``(B, C, H, W)`` → ``(B, 1, H, W)``.

        Channel-wise max and mean maps ``(B, 2, H, W)`` (in that order) → ``spatial``
        ``(B, 1, H, W)`` → ``spatial_norm`` → sigmoid.
        """
        maps = torch.cat([x.amax(dim=1, keepdim=True), x.mean(dim=1, keepdim=True)], dim=1)
        return torch.sigmoid(self.spatial_norm(self.spatial(maps)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the channel gate, then the spatial gate: ``(B, C, H, W)`` → same shape."""
        x = x * self.channel_gate(x)
        return x * self.spatial_gate(x)

    def extra_repr(self) -> str:
        return (
            f"channels={self.channels}, reduction={self.reduction}, "
            f"min_hidden={self.min_hidden}, hidden={self.hidden}, "
            f"spatial_kernel={self.spatial_kernel}"
        )


def _make(kind: str, channels: int, widths: tuple[int, int], like: nn.Module) -> nn.Module:
    """An attention block for ``channels`` on the device/dtype and in the mode of ``like``;
    ``widths`` is ``(reduction, min_hidden)``."""
    reduction, min_hidden = widths
    block: nn.Module
    if kind == "se":
        block = SqueezeExcitation(channels, reduction, min_hidden=min_hidden)
    else:
        block = CBAM(channels, reduction, min_hidden=min_hidden)
    reference = next(like.parameters(), None)
    if reference is not None:
        block = block.to(device=reference.device, dtype=reference.dtype)
    return block.train(like.training)


def _channels_of(norm: nn.Module, where: str) -> int:
    """Channel count of a normalisation layer (``num_features``, or ``num_channels``)."""
    for attribute in ("num_features", "num_channels"):
        value = getattr(norm, attribute, None)
        if isinstance(value, int):
            return value
    raise ValueError(
        f"cannot tell the channel count of {where} ({type(norm).__name__}); accepted: a "
        "normalisation layer with num_features or num_channels (BatchNorm, InstanceNorm, "
        "GroupNorm)"
    )


def _require_2d(conv: nn.Module) -> None:
    if not isinstance(conv, nn.Conv2d):
        raise ValueError(
            f"attention blocks are 2-D, but the network's stem is {type(conv).__name__}; "
            "accepted: 2-D networks (spatial_dims=2) as built by build_classifier"
        )


def _add_to_resnet(model: ResNet, kind: str, widths: tuple[int, int]) -> None:
    _require_2d(model.conv1)
    plan: list[tuple[nn.Module, str, int]] = []
    for name, block in model.named_modules():
        if isinstance(block, ResNetBottleneck):
            last = "bn3"
        elif isinstance(block, ResNetBlock):
            last = "bn2"
        else:
            continue
        plan.append((block, last, _channels_of(getattr(block, last), f"{name}.{last}")))
    if not plan:
        raise ValueError("the ResNet has no ResNetBlock or ResNetBottleneck to add attention to")
    for block, last, channels in plan:
        norm = getattr(block, last)
        setattr(block, last, nn.Sequential(norm, _make(kind, channels, widths, norm)))


def _add_to_densenet(model: DenseNet, kind: str, widths: tuple[int, int]) -> None:
    features = model.features
    _require_2d(features.conv0)
    children = list(features.named_children())
    plan: list[tuple[str, nn.Module, int]] = []
    for index, (name, block) in enumerate(children):
        if not name.startswith("denseblock"):
            continue
        # The block's output channels are the input channels of what follows it.
        following = children[index + 1][1] if index + 1 < len(children) else None
        norm = next(iter(following.children()), following) if following is not None else None
        if norm is None:
            raise ValueError(f"features.{name} is not followed by a transition or norm5")
        plan.append((name, block, _channels_of(norm, f"the layer after features.{name}")))
    if not plan:
        raise ValueError("the DenseNet has no features.denseblockK to add attention to")
    for name, block, channels in plan:
        setattr(features, name, nn.Sequential(block, _make(kind, channels, widths, block)))


def add_attention(
    model: nn.Module, kind: str, *, reduction: int = 16, min_hidden: int = 8
) -> nn.Module:
    """Insert attention blocks of ``kind`` into every block of a sibnet classifier, in place.

    See the module docstring for where each block sits. The model's input ``(B, 1, H, W)`` and
    output ``(B, num_classes)`` shapes, and the shape of the last feature map before global
    pooling, are unchanged. New blocks follow the model's device, dtype and train/eval mode.

    Args:
        model: a network from :func:`~sibnet.models.classifier.build_classifier` (MONAI 2-D
            ``ResNet`` or ``DenseNet``) without attention yet.
        kind: one of :data:`ATTENTION_KINDS`; ``"none"`` returns ``model`` untouched.
        reduction: channel-MLP bottleneck ratio ``r`` of every block.
        min_hidden: floor of every block's bottleneck width, whose width is
            ``min(C, max(min_hidden, C // reduction))`` (:func:`bottleneck_width`).

    Returns:
        ``model`` itself.

    Raises:
        ValueError: unknown ``kind``, bad ``reduction`` or ``min_hidden`` (not an integer
            >= 1), an unsupported network or one that already has attention. Nothing is
            modified in that case.
    """
    if kind not in ATTENTION_KINDS:
        raise ValueError(f"unknown attention kind {kind!r}; accepted: {list(ATTENTION_KINDS)}")
    _check_int("reduction", reduction)
    _check_int("min_hidden", min_hidden)
    if kind == "none":
        return model
    if any(isinstance(module, SqueezeExcitation | CBAM) for module in model.modules()):
        raise ValueError("the model already has attention blocks; add_attention works once")
    if isinstance(model, ResNet):
        _add_to_resnet(model, kind, (reduction, min_hidden))
    elif isinstance(model, DenseNet):
        _add_to_densenet(model, kind, (reduction, min_hidden))
    else:
        raise ValueError(
            f"cannot add attention to a {type(model).__name__}; accepted: the MONAI ResNet and "
            "DenseNet networks that build_classifier returns"
        )
    return model
