"""``objective: sibnet``: the task loss plus SIBnet's saliency terms, as method keys.

The params half of the objective (torch-free); the loss is
:class:`sibnet.losses.sibnet_objective.SibnetObjective`, which documents the formula.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import Field, model_validator

from sibnet.objectives.registry import ObjectiveParams, register_objective

if TYPE_CHECKING:
    from sibnet.config import Params

__all__ = ["REFERENCE_FORMULATION", "SIBNET_FORMULATION", "SibnetParams"]


@register_objective
class SibnetParams(ObjectiveParams):
    """A method trained with the SIBnet terms added to the task loss.

    See :class:`sibnet.losses.sibnet_objective.SibnetObjective` for the exact formula:
    ``lambda_cd`` · class distinctiveness + ``lambda_sc`` · spatial coherence (paper defaults
    1.2 and 0.9) + ``lambda_faith`` · the faithfulness term, each divided by its value at the
    first training step when ``normalize_terms`` is true, the task loss too when
    ``normalize_task`` is. The formulation keys (each the choice of the original code
    ``ubern-mia/sibnet`` where it differs, in brackets):

    * ``cam_relu``: ReLU'd maps, or signed (``false``; captum's default);
    * ``cam_alpha_grad``: the gradient flows through Grad-CAM's ``α`` (``false``: a constant);
    * ``sc_resolution``: SC on the layer's maps (``layer``) or upsampled to the input
      (``input``), by ``sc_upsample`` (``nearest``, captum's, or ``bilinear``);
    * ``sc_erosion_border``: beyond the map's edge the erosion sees ``background``
      (scipy) or ``foreground`` (scikit-image);
    * ``sc_window_border``: the window's positions beyond the edge hold ``zero`` or are left
      out (``clip``);
    * ``sc_regions``: the ``whole`` salient region, each of its ``components``, or
      ``components_skip_last`` (the original loop skips the last component);
    * ``sc_reduction``: ``mean`` or ``sum`` over the batch's images;
    * ``task_weighting``: ``none``, or ``batch_inverse_frequency`` (multi-class only);
    * ``warmup``: ``none``; ``delay`` (the saliency terms off for the first ``warmup_epochs``
      epochs) or ``ramp`` (their weight rising linearly to 1 over them).

    Setting a weight to 0 gives the ablations. These keys are errors under any other objective;
    ``sc_upsample`` needs ``sc_resolution: input`` and ``warmup_epochs`` a warm-up;
    ``warmup_epochs`` must leave at least one epoch of training with the terms on (checked
    against ``train.epochs``).
    """

    objective: Literal["sibnet"] = "sibnet"
    lambda_cd: float = Field(1.2, ge=0.0, le=1000.0)
    lambda_sc: float = Field(0.9, ge=0.0, le=1000.0)
    lambda_faith: float = Field(0.0, ge=0.0, le=1000.0)
    normalize_terms: bool = True
    normalize_task: bool = False
    task_weighting: Literal["none", "batch_inverse_frequency"] = "none"
    sc_kernel: int = Field(9, ge=3, le=63)
    cam_relu: bool = True
    cam_alpha_grad: bool = True
    sc_resolution: Literal["layer", "input"] = "layer"
    sc_upsample: Literal["nearest", "bilinear"] = "nearest"
    sc_erosion_border: Literal["background", "foreground"] = "background"
    sc_window_border: Literal["zero", "clip"] = "zero"
    sc_regions: Literal["whole", "components", "components_skip_last"] = "whole"
    sc_reduction: Literal["mean", "sum"] = "mean"
    warmup: Literal["none", "delay", "ramp"] = "none"
    warmup_epochs: int = Field(0, ge=0, le=10_000)

    terms: ClassVar[tuple[str, ...]] = ("task", "cd", "sc", "faith")
    """The task loss, class distinctiveness, spatial coherence and faithfulness (those whose
    weight is not 0)."""

    uses_unlabeled: ClassVar[bool] = True
    """CD and SC need no labels: with ``unlabeled: use`` they run on the labeled and the
    unlabeled images of a step (SIBnet+), the task loss and faithfulness on the labeled ones."""

    @model_validator(mode="after")
    def _formulation(self) -> SibnetParams:
        if self.lambda_cd == 0 and self.lambda_sc == 0 and self.lambda_faith == 0:
            raise ValueError(
                "objective 'sibnet' needs lambda_cd > 0, lambda_sc > 0 or lambda_faith > 0"
            )
        if self.unlabeled == "use" and self.lambda_cd == 0 and self.lambda_sc == 0:
            raise ValueError(
                "unlabeled: use feeds unlabeled images to class distinctiveness and spatial "
                "coherence, but lambda_cd and lambda_sc are 0 (faithfulness needs labels); "
                "set one of them > 0 or unlabeled: ignore"
            )
        if self.sc_kernel % 2 == 0:
            raise ValueError(f"sc_kernel must be odd, got {self.sc_kernel}")
        if self.sc_resolution == "layer":
            self.refuse_keys(("sc_upsample",), "sc_resolution 'input'", "sc_resolution: input")
        if self.warmup == "none" and self.warmup_epochs:
            raise ValueError(
                f"warmup_epochs = {self.warmup_epochs} needs a warm-up; set warmup: delay or "
                "warmup: ramp, or warmup_epochs: 0"
            )
        if self.warmup != "none" and not self.warmup_epochs:
            raise ValueError(f"warmup {self.warmup!r} needs warmup_epochs >= 1")
        return self

    def inapplicable_keys(self) -> tuple[str, ...]:
        return ("sc_upsample",) if self.sc_resolution == "layer" else ()

    def check(self, name: str, params: Params) -> None:
        """``warmup_epochs`` against ``train.epochs``, ``lambda_faith`` against
        ``train.processes``, ``task_weighting`` against ``train.class_weights`` and the task."""
        epochs = params.train.epochs
        if self.warmup_epochs >= epochs:
            raise ValueError(
                f"methods.{name}.warmup_epochs = {self.warmup_epochs} leaves no epoch with "
                f"the SIBnet terms on (train.epochs = {epochs}); accepted: 0 .. {epochs - 1}"
            )
        if self.lambda_faith > 0 and params.train.processes > 1:
            raise ValueError(
                f"methods.{name}.lambda_faith > 0 runs a second forward pass per step, which "
                "data-parallel training does not support; set train.processes: 1"
            )
        if self.task_weighting == "batch_inverse_frequency":
            if params.train.class_weights:
                raise ValueError(
                    f"methods.{name}.task_weighting = batch_inverse_frequency and "
                    "train.class_weights = true both weight the task loss; choose one"
                )
            if params.prepare.task() == "multilabel":
                source = params.prepare.source
                key = params.prepare.section().task_key
                raise ValueError(
                    f"methods.{name}.task_weighting = batch_inverse_frequency needs a "
                    f"multiclass task, but prepare.{source}.{key} is multilabel; set "
                    "task_weighting: none"
                )


REFERENCE_FORMULATION: dict[str, Any] = {
    "lambda_cd": 1.0,
    "lambda_sc": 1.0,
    "normalize_terms": True,
    "normalize_task": True,
    "task_weighting": "batch_inverse_frequency",
    "cam_relu": False,
    "cam_alpha_grad": False,
    "sc_resolution": "input",
    "sc_upsample": "nearest",
    "sc_erosion_border": "foreground",
    "sc_window_border": "clip",
    "sc_regions": "components_skip_last",
    "sc_reduction": "sum",
}
"""The original SIBnet code's training loss (``ubern-mia/sibnet``), as method keys."""

SIBNET_FORMULATION: dict[str, Any] = {
    "lambda_cd": 0.012,
    "lambda_sc": 0.009,
    "lambda_faith": 0.0,
    "normalize_terms": True,
    "normalize_task": False,
    "task_weighting": "none",
    "sc_kernel": 9,
    "cam_relu": True,
    "cam_alpha_grad": True,
    "sc_resolution": "layer",
    "sc_erosion_border": "background",
    "sc_window_border": "zero",
    "sc_regions": "whole",
    "sc_reduction": "mean",
    "warmup": "none",
    "warmup_epochs": 0,
}
"""The shipped ``sibnet`` method: the configuration ``studies/fidelity.yaml`` selected by
validation macro AUC (``sib_lambda_0p01``; README, *What the evidence says*). The field defaults
of :class:`SibnetParams` are the study's ``sib_today`` formulation (paper weights 1.2 and 0.9)."""
