"""Training objectives: the task loss, optionally plus the SIBnet saliency terms.

An objective runs the model on a batch and returns the loss to minimise together with its
terms for logging. ``cross_entropy`` is the task loss alone (softmax cross-entropy or per-label
BCE, see :func:`sibnet.engine.task_loss`). ``sibnet`` (Mahapatra, Poellinger & Reyes, Medical
Image Analysis 81, 2022) computes every class's Grad-CAM map from the same forward pass
(:func:`sibnet.saliency.logits_and_grad_cam`, differentiable) and adds

    loss = task + λ_cd · CD(maps) / s_cd + λ_sc · SC(maps) / s_sc

with CD the class-distinctiveness and SC the spatial-coherence loss (:mod:`sibnet.losses`).
With ``normalize_terms`` the scales ``s`` are the terms' values at the first training step
(the original implementation's scheme, which puts both terms on the task loss's scale; in
data-parallel training, the value over the whole global batch, shared by every process);
otherwise ``s = 1``. A term whose weight is 0 is not computed (the ablations).

Mixed precision (``train.precision: bf16``): :func:`sibnet.engine.train_epoch` runs the
objective under ``torch.autocast(dtype=torch.bfloat16)``. The forward pass is bf16; the task
loss takes float32 logits; the Grad-CAM weighting (:mod:`sibnet.saliency.gradcam`) casts the
feature maps and gradients to float32, and CD and SC run outside autocast on float32 maps.
Measured on the CPU (untrained networks, 5 classes; the 2026-11-26 figures): bf16 forward with
the weighting in bf16 against the same with the weighting in float32 differ by at most
1.3e-4 in CD and 9.8e-4 in SC (resnet10_small, 8 images of 128×128; SC ≈ 0.044), 1.2e-4 in CD
(densenet121, 4 images of 96×96); both differ from the all-float32 maps by about 5e-4–1e-2
in CD and 3e-3–4e-3 in SC, an error that comes from the bf16 activations themselves. The float32
weighting removes about a quarter of SC's error on the closed-form path at negligible cost (an
einsum over ``(B, C, h, w)``), so it is used. Float32 inputs are unaffected (``.float()`` on a
float32 tensor is the tensor itself), so fp32 results are bit-identical to before.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from sibnet.config import MethodParams
from sibnet.distributed import all_reduce_sum, unwrap
from sibnet.engine import task_loss
from sibnet.losses import class_distinctiveness, spatial_coherence
from sibnet.saliency import logits_and_grad_cam

__all__ = ["Objective", "SibnetObjective", "TaskObjective", "build_objective"]

Terms = dict[str, torch.Tensor]


class Objective(nn.Module):
    """``forward(model, images, targets) -> (loss, terms)``; terms are detached scalars.

    Every objective holds its task loss as ``task`` (validation scores that loss alone).
    """

    task: nn.Module

    def forward(
        self, model: nn.Module, images: torch.Tensor, targets: torch.Tensor
    ) -> tuple[torch.Tensor, Terms]:
        raise NotImplementedError

    def resume_state(self) -> dict[str, Any]:
        """State beyond the model's that training must carry over a restart (none here)."""
        return {}

    def load_resume_state(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`resume_state` returned."""


class TaskObjective(Objective):
    """The task loss alone. ``images`` ``(B, 1, H, W)``, ``targets`` ``(B, C)`` 0/1."""

    def __init__(self, task: nn.Module) -> None:
        super().__init__()
        self.task = task

    def forward(
        self, model: nn.Module, images: torch.Tensor, targets: torch.Tensor
    ) -> tuple[torch.Tensor, Terms]:
        loss = self.task(model(images).float(), targets)
        return loss, {"task": loss.detach()}


class SibnetObjective(Objective):
    """Task loss + weighted class-distinctiveness and spatial-coherence terms on Grad-CAM maps.

    Args:
        task: the task loss on ``(B, C)`` logits and targets.
        lambda_cd, lambda_sc: weights of the two terms (≥ 0, not both 0).
        normalize_terms: divide each term by its value at the first training step.
        sc_kernel: the spatial-coherence neighbourhood (odd).
        layer_name: dotted name of the Grad-CAM layer in the model; ``None`` for the default
            (the last feature map before global pooling).
    """

    def __init__(
        self,
        task: nn.Module,
        *,
        lambda_cd: float,
        lambda_sc: float,
        normalize_terms: bool,
        sc_kernel: int = 9,
        layer_name: str | None = None,
    ) -> None:
        super().__init__()
        if lambda_cd < 0 or lambda_sc < 0 or lambda_cd + lambda_sc == 0:
            raise ValueError(
                f"need lambda_cd, lambda_sc >= 0 and not both 0; got {lambda_cd}, {lambda_sc}"
            )
        self.task = task
        self.lambda_cd, self.lambda_sc = lambda_cd, lambda_sc
        self.normalize_terms = normalize_terms
        self.sc_kernel = sc_kernel
        self.layer_name = layer_name
        self.register_buffer("scale_cd", torch.tensor(1.0))
        self.register_buffer("scale_sc", torch.tensor(1.0))
        self._scales_known: set[str] = set()

    @staticmethod
    def _global_mean(value: torch.Tensor, count: int) -> torch.Tensor:
        """A per-image mean over ``count`` images → the mean over every data-parallel process's
        images (itself with one process), so all processes share one scale."""
        weighted = value.double() * count
        total = all_reduce_sum(torch.stack([weighted, torch.full_like(weighted, float(count))]))
        return (total[0] / total[1]).to(value.dtype)

    def _scaled(self, name: str, value: torch.Tensor, count: int) -> torch.Tensor:
        if not self.normalize_terms:
            return value
        scale: torch.Tensor = getattr(self, f"scale_{name}")
        if name not in self._scales_known:  # first training step: remember the term's size
            scale.copy_(self._global_mean(value.detach(), count).clamp_min(1e-12))
            self._scales_known.add(name)
        return value / scale

    def scales(self) -> dict[str, float]:
        """The normalisation scales in use (``{}`` before the first step or without them)."""
        return {name: float(getattr(self, f"scale_{name}")) for name in sorted(self._scales_known)}

    def forward(
        self, model: nn.Module, images: torch.Tensor, targets: torch.Tensor
    ) -> tuple[torch.Tensor, Terms]:
        layer = unwrap(model).get_submodule(self.layer_name) if self.layer_name else None
        logits, maps = logits_and_grad_cam(model, images, layer=layer, create_graph=True)
        # Float32 from here on, also under bf16 autocast (see the module docstring).
        with torch.autocast(maps.device.type, enabled=False):
            logits, maps = logits.float(), maps.float()
            task = self.task(logits, targets)
            loss = task
            terms: Terms = {"task": task.detach()}
            if self.lambda_cd > 0:
                cd = class_distinctiveness(maps)
                loss = loss + self.lambda_cd * self._scaled("cd", cd, len(images))
                terms["cd"] = cd.detach()
            if self.lambda_sc > 0:
                sc = spatial_coherence(maps, kernel_size=self.sc_kernel)
                loss = loss + self.lambda_sc * self._scaled("sc", sc, len(images))
                terms["sc"] = sc.detach()
        return loss, terms

    def resume_state(self) -> dict[str, Any]:
        """The normalisation state (scales and which are known), for a resumable checkpoint."""
        return {
            "scale_cd": self.scale_cd.detach().cpu().clone(),
            "scale_sc": self.scale_sc.detach().cpu().clone(),
            "known": sorted(self._scales_known),
        }

    def load_resume_state(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`resume_state` returned."""
        with torch.no_grad():
            self.scale_cd.copy_(state["scale_cd"])
            self.scale_sc.copy_(state["scale_sc"])
        self._scales_known = set(state["known"])


def build_objective(
    method: MethodParams, task: str, class_weights: torch.Tensor | None = None
) -> Objective:
    """The objective a method trains with, for a ``multiclass`` or ``multilabel`` task."""
    loss = task_loss(task, class_weights)
    if method.objective == "cross_entropy":
        return TaskObjective(loss)
    return SibnetObjective(
        loss,
        lambda_cd=method.lambda_cd,
        lambda_sc=method.lambda_sc,
        normalize_terms=method.normalize_terms,
        sc_kernel=method.sc_kernel,
    )
