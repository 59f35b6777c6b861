"""``objective: sibnet``: the task loss plus the SIBnet saliency terms (params:
:class:`sibnet.objectives.sibnet.SibnetParams`).

SIBnet (Mahapatra, Poellinger & Reyes, Medical Image Analysis 81, 2022) computes every class's
Grad-CAM map from the same forward pass (:func:`sibnet.saliency.logits_and_grad_cam`,
differentiable) and adds

    loss = task / s_task + f · (λ_cd · CD / s_cd + λ_sc · SC / s_sc + λ_faith · F / s_faith)

with CD the class-distinctiveness and SC the spatial-coherence loss (:mod:`sibnet.losses.sibnet`), F
the optional faithfulness term (:mod:`sibnet.losses.faithfulness`) and ``f`` a warm-up factor.
Every choice that decides the outcome (map sign, gradient through ``α``, SC's resolution,
border handling, regions and reduction, normalisation, task weighting, warm-up) is a key of the
method in ``params.yaml``; :class:`SibnetObjective` documents each. With normalisation the
scales ``s`` are the terms' values at their first active training step (the original
implementation's scheme; in data-parallel training, the value over the whole global batch,
shared by every process); otherwise ``s = 1``. A term whose weight is 0 is not computed.

SIBnet+ (a method's ``unlabeled: use``): the batch holds labeled and unlabeled images and a
``labeled`` flag per image (:func:`sibnet.engine.train_epoch`). One forward pass gives every
image's logits and maps; the task loss (and faithfulness, which needs the labels) takes the
labeled images' only, CD and SC the maps of all of them. Batch normalisation sees the joint
batch. The unlabeled images' stored targets are placeholders that never reach a loss
(``tests/test_unlabeled_objectives.py`` and ``tests/stages/test_train_unlabeled.py`` poison
them and find loss, gradients and the trained model unchanged).

``sibnet_reference`` in ``params.yaml`` is the original code's training loss
(``ubern-mia/sibnet``, ``examples/train_and_eval_pytorch.py``): signed maps, ``α`` constant,
SC on nearest-upsampled maps with border pixels kept by the erosion, the window clipped at the
border, each connected component scored but the last and a sum over the batch; CE weighted by
the batch's inverse class frequencies; every term divided by its first value, weights 1. It
agrees with an independent implementation built on captum and scikit-image
(``tests/test_reference_loss.py``) in value and gradients. What cannot agree: captum runs one
extra forward pass per class, which in training mode updates the batch-norm running statistics
C more times per step; the loss and its gradients use the batch's own statistics, so they are
unaffected, but the running statistics (used at evaluation) differ.

Mixed precision (``train.precision: bf16``): :func:`sibnet.engine.train_epoch` runs the
objective under ``torch.autocast(dtype=torch.bfloat16)``. The forward pass is bf16; the task
loss takes float32 logits; the Grad-CAM weighting (:mod:`sibnet.saliency.gradcam`) casts the
feature maps and gradients to float32, and CD and SC run outside autocast on float32 maps (the
error this leaves, measured, is in ``benchmarks/README.md``). Float32 inputs are unaffected
(``.float()`` on a float32 tensor is the tensor itself), so fp32 results are bit-identical.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from sibnet.data.tensors import Batch
from sibnet.distributed import all_reduce_sum, unwrap
from sibnet.losses.faithfulness import faithfulness
from sibnet.losses.objective import Objective, Terms
from sibnet.losses.sibnet import class_distinctiveness, spatial_coherence
from sibnet.losses.task import batch_inverse_frequency_cross_entropy, task_loss
from sibnet.objectives.registry import ObjectiveParams, implements
from sibnet.objectives.sibnet import SibnetParams
from sibnet.saliency import logits_and_grad_cam, upsample

__all__ = ["SibnetObjective"]


@implements(SibnetParams)
class SibnetObjective(Objective):
    """Task loss + weighted SIBnet terms on Grad-CAM maps; the formulation is the arguments.

    ``loss = t · task / s_task + f · (λ_cd · CD / s_cd + λ_sc · SC / s_sc + λ_faith · F / s_faith)``

    * ``s_*``: a term's value at its first training step with ``normalize_terms`` (CD, SC, F)
      and ``normalize_task`` (the task loss), else 1 (the original code normalises all three);
      a term that is 0 there (SC when no map has a scored region) takes its scale at its first
      nonzero step instead of dividing by 0 later;
    * ``f``: the warm-up factor: ``warmup="delay"`` — 0 for the first ``warmup_epochs`` epochs
      (the maps are not computed), then 1; ``"ramp"`` — rising linearly, per step, from 0 at
      the first step to 1 after ``warmup_epochs`` epochs; ``"none"`` — 1. At initialisation the
      maps mean nothing; a term whose scale is taken while it is off is taken at its first
      active step instead;
    * ``task``: the task loss, or with ``task_weighting="batch_inverse_frequency"`` (multi-class
      only) :func:`batch_inverse_frequency_cross_entropy`;
    * the maps: Grad-CAM at the layer (:func:`sibnet.saliency.logits_and_grad_cam`), ReLU'd
      unless ``cam_relu`` is false (captum's default keeps them signed), differentiable through
      ``α`` unless ``cam_alpha_grad`` is false (captum's ``α`` is a constant);
    * CD (:func:`sibnet.losses.class_distinctiveness`) on the layer's maps (a nearest upsampling
      by an integer factor leaves every cosine as it is);
    * SC (:func:`sibnet.losses.spatial_coherence`) on the layer's maps
      (``sc_resolution="layer"``) or on maps upsampled to the input (``"input"``, by
      ``sc_upsample``: ``nearest`` as captum's ``LayerAttribution.interpolate``, or
      ``bilinear``), with ``sc_erosion_border``, ``sc_window_border``, ``sc_regions``,
      ``sc_reduction`` passed on;
    * F: :func:`sibnet.losses.faithfulness.faithfulness` (``lambda_faith > 0``), the term aimed
      at the collapse of the maps onto fixed, class-owned regions (see that module).

    A term whose weight is 0 is not computed. The keyword arguments are the keys of a
    ``sibnet`` method in ``params.yaml`` (:class:`sibnet.objectives.sibnet.SibnetParams`).

    Args:
        task: the task loss on ``(B, C)`` logits and targets.
        task_name: ``"multiclass"`` or ``"multilabel"`` (the faithfulness term's probability).
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
        lambda_faith: float = 0.0,
        normalize_task: bool = False,
        task_weighting: str = "none",
        task_name: str = "multiclass",
        sc_kernel: int = 9,
        cam_relu: bool = True,
        cam_alpha_grad: bool = True,
        sc_resolution: str = "layer",
        sc_upsample: str = "nearest",
        sc_erosion_border: str = "background",
        sc_window_border: str = "zero",
        sc_regions: str = "whole",
        sc_reduction: str = "mean",
        warmup: str = "none",
        warmup_epochs: int = 0,
        layer_name: str | None = None,
    ) -> None:
        super().__init__()
        weights = (lambda_cd, lambda_sc, lambda_faith)
        if min(weights) < 0 or sum(weights) == 0:
            raise ValueError(
                "need lambda_cd, lambda_sc, lambda_faith >= 0 and not all 0; "
                f"got {lambda_cd}, {lambda_sc}, {lambda_faith}"
            )
        if task_weighting not in ("none", "batch_inverse_frequency"):
            raise ValueError(f"unknown task_weighting {task_weighting!r}")
        if task_weighting != "none" and task_name != "multiclass":
            raise ValueError(
                "task_weighting: batch_inverse_frequency weights a softmax cross-entropy and "
                f"needs a multiclass task; this dataset is {task_name}; set task_weighting: none"
            )
        if warmup not in ("none", "delay", "ramp") or (warmup == "none") != (warmup_epochs == 0):
            raise ValueError(
                f"warmup {warmup!r} with warmup_epochs {warmup_epochs}: accepted: warmup none "
                "with 0 epochs, or delay / ramp with warmup_epochs >= 1"
            )
        self.task = task
        self.task_name = task_name
        self.lambdas = {"cd": lambda_cd, "sc": lambda_sc, "faith": lambda_faith}
        self.normalize_terms, self.normalize_task = normalize_terms, normalize_task
        self.task_weighting = task_weighting
        self.sc_kernel = sc_kernel
        self.cam_relu, self.cam_alpha_grad = cam_relu, cam_alpha_grad
        self.sc_resolution, self.sc_upsample = sc_resolution, sc_upsample
        self.sc_options = {
            "erosion_border": sc_erosion_border,
            "window_border": sc_window_border,
            "regions": sc_regions,
            "reduction": sc_reduction,
        }
        self.warmup, self.warmup_epochs = warmup, warmup_epochs
        self.layer_name = layer_name
        for name in ("task", *self.lambdas):
            self.register_buffer(f"scale_{name}", torch.tensor(1.0))
        self._scales_known: set[str] = set()
        self._epoch, self._steps, self._step = 1, 1, 0

    @property
    def term_names(self) -> tuple[str, ...]:
        return ("task", *(name for name, weight in self.lambdas.items() if weight > 0))

    def begin_epoch(self, epoch: int, steps: int) -> None:
        self._epoch, self._steps, self._step = epoch, max(1, steps), 0

    def warmup_factor(self) -> float:
        """The saliency terms' factor ``f`` at the current step (see the class docstring)."""
        if self.warmup == "none":
            return 1.0
        if self.warmup == "delay":
            return 0.0 if self._epoch <= self.warmup_epochs else 1.0
        progress = (self._epoch - 1 + self._step / self._steps) / self.warmup_epochs
        return min(1.0, progress)

    @staticmethod
    def _global_mean(value: torch.Tensor, count: int) -> torch.Tensor:
        """A per-image mean over ``count`` images → the mean over every data-parallel process's
        images (itself with one process), so all processes share one scale."""
        weighted = value.double() * count
        total = all_reduce_sum(torch.stack([weighted, torch.full_like(weighted, float(count))]))
        return (total[0] / total[1]).to(value.dtype)

    def _scaled(self, name: str, value: torch.Tensor, count: int) -> torch.Tensor:
        normalize = self.normalize_task if name == "task" else self.normalize_terms
        if not normalize:
            return value
        scale: torch.Tensor = getattr(self, f"scale_{name}")
        if name not in self._scales_known:  # first (active) step: remember the term's size
            size = self._global_mean(value.detach(), count)
            if not bool(size > 1e-12):  # a term that is 0 (e.g. no region yet) has no scale:
                return value  # it takes it at its first nonzero step
            scale.copy_(size)
            self._scales_known.add(name)
        return value / scale

    def scales(self) -> dict[str, float]:
        """The normalisation scales in use (``{}`` before the first step or without them)."""
        # names from the objective's own strings (not the resume state's), so a resumed run's
        # checkpoint pickles byte for byte as an uninterrupted one's
        names = sorted(n for n in ("task", *self.lambdas) if n in self._scales_known)
        return {name: float(getattr(self, f"scale_{name}")) for name in names}

    def _task(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        if self.task_weighting == "batch_inverse_frequency":
            return batch_inverse_frequency_cross_entropy(logits, targets)
        return self.task(logits, targets)

    @classmethod
    def from_params(
        cls, params: SibnetParams, task: str, class_weights: torch.Tensor | None
    ) -> SibnetObjective:
        """The objective of a ``sibnet`` method: every formulation key of ``params`` (the keys
        :class:`~sibnet.objectives.sibnet.SibnetParams` adds to the shared ones)."""
        options = {
            key: getattr(params, key)
            for key in SibnetParams.model_fields
            if key not in ObjectiveParams.model_fields
        }
        return cls(task_loss(task, class_weights), task_name=task, **options)

    def forward(self, model: nn.Module, batch: Batch) -> tuple[torch.Tensor, Terms]:
        """``batch["image"]`` ``(B, 1, H, W)``, ``batch["target"]`` ``(B, C)``; with
        ``batch["labeled"]`` ``(B,)`` (SIBnet+) the task loss and faithfulness take the labeled
        images only, CD and SC every image (one forward pass over all ``B``)."""
        images, targets = batch["image"], batch["target"]
        labeled = batch.get("labeled")
        factor = self.warmup_factor()
        self._step += 1
        if factor == 0.0 and self.warmup == "delay":  # warm-up: the task loss alone
            if labeled is not None:
                images, targets = images[labeled], targets[labeled]
            task = self._task(model(images).float(), targets)
            loss = self.shared(self._scaled("task", task, len(images)), "labeled")
            return loss, {"task": task.detach()}
        layer = unwrap(model).get_submodule(self.layer_name) if self.layer_name else None
        logits, maps = logits_and_grad_cam(
            model,
            images,
            layer=layer,
            create_graph=True,
            relu=self.cam_relu,
            alpha_grad=self.cam_alpha_grad,
        )
        # Float32 from here on, also under bf16 autocast (see the module docstring).
        with torch.autocast(maps.device.type, enabled=False):
            logits, maps = logits.float(), maps.float()
            if labeled is not None:  # the labels of the unlabeled images never reach a loss
                logits, targets = logits[labeled], targets[labeled]
            task = self._task(logits, targets)
            loss = self.shared(self._scaled("task", task, len(targets)), "labeled")
            terms: Terms = {"task": task.detach()}
            saliency = 0.0
            for name, weight in self.lambdas.items():
                if weight > 0:
                    value, count = self._term(name, model, images, maps, targets, labeled)
                    kind = "labeled" if name == "faith" or labeled is None else "images"
                    saliency = saliency + weight * self.shared(
                        self._scaled(name, value, count), kind
                    )
                    terms[name] = value.detach()
            loss = loss + factor * saliency
        return loss, terms

    def _term(
        self,
        name: str,
        model: nn.Module,
        images: torch.Tensor,
        maps: torch.Tensor,
        targets: torch.Tensor,
        labeled: torch.Tensor | None,
    ) -> tuple[torch.Tensor, int]:
        """Term ``name`` and the number of images it is a mean over; ``targets`` are the
        labeled images' (``labeled``: which of ``images`` and ``maps`` those are)."""
        if name == "cd":
            return class_distinctiveness(maps), len(maps)
        if name == "sc":
            if self.sc_resolution == "input":
                maps = upsample(maps, tuple(images.shape[-2:]), self.sc_upsample)
            return spatial_coherence(maps, kernel_size=self.sc_kernel, **self.sc_options), len(maps)
        if labeled is not None:
            images, maps = images[labeled], maps[labeled]
        return faithfulness(model, images, maps, targets, self.task_name), len(targets)

    def resume_state(self) -> dict[str, Any]:
        """The normalisation state (scales and which are known), for a resumable checkpoint."""
        return {
            **{
                f"scale_{n}": getattr(self, f"scale_{n}").detach().cpu().clone()
                for n in ("task", *self.lambdas)
            },
            "known": sorted(self._scales_known),
        }

    def load_resume_state(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`resume_state` returned."""
        with torch.no_grad():
            for name in ("task", *self.lambdas):
                key = f"scale_{name}"
                if key in state:
                    getattr(self, key).copy_(state[key])
        self._scales_known = set(state["known"])
