"""Grad-CAM saliency maps for every class at once, differentiable for training losses.

Grad-CAM (Selvaraju et al., "Grad-CAM: Visual Explanations from Deep Networks via
Gradient-based Localization", ICCV 2017): for the activations ``A`` ``(B, K, h, w)`` of a layer
and the logit ``y_c`` of class ``c``,

    α_k^c = mean_{i,j} ∂y_c / ∂A_k(i, j),      map_c = ReLU(Σ_k α_k^c A_k)

(``relu=False`` keeps the signed map). No normalisation is applied.

Two ways to get ``α``, chosen per model and layer by :func:`cam_mode`:

- **closed form** — when the layer's output goes straight into global average pooling and one
  linear layer, ``∂y_c/∂A_k(i, j) = W[c, k] / (h·w)`` everywhere, so ``α = W / (h·w)`` and every
  class's map comes from the one forward pass, with no backward pass per class;
- **autograd** — otherwise (a ReLU or normalisation between the layer and the pooling, as in
  MONAI's DenseNet-121, changes the gradients): one ``torch.autograd.grad`` per class from the
  logits back to the layer only (the head, not the whole network).

Detection is empirical and exact, on every call and from the same forward pass: the input of the
model's last ``nn.Linear`` is compared with the spatial mean of the layer's output, and that
linear layer's output with the model's output; the closed form is used only if both agree (so a
ReLU, a normalisation or an active dropout in between sends the call to autograd).

The layer's output is captured by a forward hook that passes a *clone* downstream, so an
in-place operation after the layer (MONAI's DenseNet applies ``ReLU(inplace=True)`` to the
``features`` output) cannot overwrite the activations the maps are built from.

Under ``torch.autocast`` (bf16 training) the forward pass runs in bfloat16 but the weighting
above runs in float32 (activations and gradients cast up), so the maps are float32.

With ``create_graph=True`` (training) the maps stay in the autograd graph: they are
differentiable with respect to the model's parameters, on the model's device, with no NumPy.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from sibnet.distributed import unwrap

__all__ = [
    "CamMode",
    "cam_layer",
    "cam_mode",
    "default_cam_layer",
    "grad_cam",
    "logits_and_grad_cam",
    "upsample",
]

CamMode = Literal["closed_form", "autograd"]


def default_cam_layer(model: nn.Module) -> nn.Module:
    """The last feature map before global pooling of the project's classifiers.

    MONAI ``ResNet``: ``layer4``. MONAI ``DenseNet121``: ``features`` (whose output is followed
    by an in-place ReLU, then pooling).

    Raises:
        ValueError: the model is not one of the project's classifiers; pass ``layer`` yourself.
    """
    model = unwrap(model)
    if hasattr(model, "layer4") and hasattr(model, "fc"):
        return model.layer4
    if hasattr(model, "features") and hasattr(model, "class_layers"):
        return model.features
    raise ValueError(
        f"no default Grad-CAM layer for {type(model).__name__}; pass the layer explicitly "
        "(the last feature map before global pooling)"
    )


def cam_layer(model: nn.Module, name: str | None) -> nn.Module:
    """The module called ``name`` (dotted, e.g. ``layer3``) of ``model``, or the default layer.

    Raises:
        ValueError: no such module; the message lists the model's top-level modules.
    """
    model = unwrap(model)
    if name is None:
        return default_cam_layer(model)
    try:
        return model.get_submodule(name)
    except AttributeError:
        children = [child for child, _ in model.named_children()]
        raise ValueError(
            f"the classifier has no module {name!r} for Grad-CAM; accepted: a dotted module "
            f"name, e.g. one of {children} or a module inside one of them"
        ) from None


def _last_linear(model: nn.Module) -> nn.Linear | None:
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    return linears[-1] if linears else None


@contextlib.contextmanager
def _capture(layer: nn.Module, linear: nn.Linear | None) -> Iterator[dict[str, torch.Tensor]]:
    """Record the layer's output (passing a clone on) and the last linear's input and output."""
    seen: dict[str, torch.Tensor] = {}

    def keep_activation(module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor:
        if not isinstance(output, torch.Tensor) or output.dim() != 4:
            raise ValueError(
                f"Grad-CAM layer {type(module).__name__} must output a (B, K, h, w) tensor, "
                f"got {type(output).__name__} {getattr(output, 'shape', '')}"
            )
        seen["activations"] = output
        return output.clone()

    def keep_linear(module: nn.Module, args: tuple, output: torch.Tensor) -> None:
        seen["linear_in"], seen["linear_out"] = args[0], output

    handles = [layer.register_forward_hook(keep_activation)]
    if linear is not None:
        handles.append(linear.register_forward_hook(keep_linear))
    try:
        yield seen
    finally:
        for handle in handles:
            handle.remove()


def _closed_form_applies(seen: dict[str, torch.Tensor], logits: torch.Tensor) -> bool:
    if "linear_in" not in seen:
        return False
    pooled = seen["activations"].mean(dim=(2, 3))
    linear_in, linear_out = seen["linear_in"], seen["linear_out"]
    if linear_in.shape != pooled.shape or linear_out.shape != logits.shape:
        return False
    with torch.no_grad():
        return bool(
            torch.allclose(linear_in, pooled, rtol=1e-4, atol=1e-5)
            and torch.equal(linear_out, logits)
        )


def cam_mode(model: nn.Module, layer: nn.Module, images: torch.Tensor) -> CamMode:
    """Which way :func:`grad_cam` computes the maps for ``layer`` of ``model`` on ``images``.

    A diagnostic: runs the model once without gradients, in its current train/eval mode
    (batch-norm running statistics are restored afterwards).

    Args:
        images: ``(B, C_in, H, W)``.
    """
    buffers = {name: b.clone() for name, b in model.named_buffers()}
    with torch.no_grad(), _capture(layer, _last_linear(model)) as seen:
        logits = model(images)
    with torch.no_grad():
        for name, buffer in model.named_buffers():
            buffer.copy_(buffers[name])
    return "closed_form" if _closed_form_applies(seen, logits) else "autograd"


def logits_and_grad_cam(
    model: nn.Module,
    images: torch.Tensor,
    *,
    layer: nn.Module | None = None,
    create_graph: bool = False,
    relu: bool = True,
    mode: CamMode | None = None,
    alpha_grad: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One forward pass → the logits and every class's Grad-CAM map.

    Args:
        model: a classifier mapping ``(B, C_in, H, W)`` to ``(B, C)`` logits.
        images: ``(B, C_in, H, W)``.
        layer: module whose output ``(B, K, h, w)`` the maps are built on; default
            :func:`default_cam_layer`.
        create_graph: keep the maps differentiable w.r.t. the parameters (for training
            losses); otherwise they are detached.
        relu: apply the ReLU of the definition; ``False`` keeps the signed map.
        mode: force ``"closed_form"`` or ``"autograd"``; default: detected from this forward
            pass (see the module docstring).
        alpha_grad: with ``create_graph``, let the gradient flow through the channel weights
            ``α`` too (``W / (h·w)`` in the closed form, the second-order term on the autograd
            path). ``False`` treats ``α`` as a constant, as captum's ``LayerGradCam`` does (its
            ``torch.autograd.grad`` runs without ``create_graph``): the maps then reach the
            parameters only through the activations.

    Returns:
        ``(logits, maps)``: ``(B, C)`` and ``(B, C, h, w)``.
    """
    layer = default_cam_layer(model) if layer is None else layer
    linear = _last_linear(model)
    with torch.enable_grad():
        with _capture(layer, linear) as seen:
            logits = model(images)
        activations = seen["activations"]
        if mode is None:
            mode = "closed_form" if _closed_form_applies(seen, logits) else "autograd"
        # Under autocast (bf16 training) the weighting runs in float32 on float32 copies of the
        # activations and gradients; for float32 inputs this changes nothing.
        with torch.autocast(activations.device.type, enabled=False):
            features = activations.float()
            if mode == "closed_form":
                if linear is None:
                    raise ValueError("closed-form Grad-CAM needs a final nn.Linear layer")
                h, w = activations.shape[-2:]
                weights = linear.weight.float() / (h * w)  # α^c_k = W[c, k] / (h·w): (C, K)
                if not alpha_grad:
                    weights = weights.detach()
                maps = torch.einsum("ck,bkhw->bchw", weights, features)
            else:
                if not activations.requires_grad:
                    raise ValueError("the Grad-CAM layer's output does not depend on any parameter")
                alphas = []
                for c in range(logits.shape[1]):
                    (grad,) = torch.autograd.grad(
                        logits[:, c].sum(),
                        activations,
                        retain_graph=True,
                        create_graph=create_graph and alpha_grad,
                    )
                    alphas.append(grad.float().mean(dim=(2, 3)))  # (B, K)
                maps = torch.einsum("bck,bkhw->bchw", torch.stack(alphas, dim=1), features)
            if relu:
                maps = F.relu(maps)
    if not create_graph:
        maps = maps.detach()
        if not torch.is_grad_enabled():
            logits = logits.detach()
    return logits, maps


def grad_cam(
    model: nn.Module,
    images: torch.Tensor,
    *,
    layer: nn.Module | None = None,
    create_graph: bool = False,
    relu: bool = True,
) -> torch.Tensor:
    """Grad-CAM maps ``(B, C, h, w)`` of every class; see :func:`logits_and_grad_cam`."""
    return logits_and_grad_cam(model, images, layer=layer, create_graph=create_graph, relu=relu)[1]


def upsample(
    maps: torch.Tensor, size: tuple[int, int], mode: Literal["bilinear", "nearest"] = "bilinear"
) -> torch.Tensor:
    """Resize ``(B, C, h, w)`` maps to ``(B, C, *size)`` (input resolution): bilinear
    (``align_corners=False``) or nearest (captum's ``LayerAttribution.interpolate`` default)."""
    if maps.dim() != 4:
        raise ValueError(f"maps must have shape (B, C, h, w), got {tuple(maps.shape)}")
    if mode == "nearest":
        return F.interpolate(maps, size=size, mode="nearest")
    return F.interpolate(maps, size=size, mode="bilinear", align_corners=False)
