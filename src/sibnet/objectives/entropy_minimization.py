"""``objective: entropy_minimization``: the task loss plus the mean prediction entropy of the
unlabeled images, the plain semi-supervised reference of the unlabeled-images study.

The params half of the objective (torch-free); the loss is
:class:`sibnet.losses.entropy_minimization.EntropyMinimizationObjective`.
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, model_validator

from sibnet.objectives.registry import ObjectiveParams, register_objective

__all__ = ["EntropyMinimizationParams"]


@register_objective
class EntropyMinimizationParams(ObjectiveParams):
    """Entropy minimisation (Grandvalet & Bengio, *Semi-supervised learning by entropy
    minimization*, NeurIPS 2004): ``loss = task(labeled) + lambda_entropy · H(unlabeled)``.

    ``H`` is the mean over a step's unlabeled images of the prediction's entropy: the softmax's
    (multi-class) or the mean over labels of each sigmoid's binary entropy (multi-label), in
    nats. It uses the same unlabeled images as SIBnet+ but no saliency, so a study can tell
    "the saliency terms learn from unlabeled images" from "more images help". The method must
    set ``unlabeled: use``; ``lambda_entropy`` 0.1 is the usual order of magnitude (the paper
    tunes it on validation data).
    """

    objective: Literal["entropy_minimization"] = "entropy_minimization"
    lambda_entropy: float = Field(0.1, gt=0.0, le=1000.0)

    terms: ClassVar[tuple[str, ...]] = ("task", "entropy")
    """The task loss and the unlabeled images' mean entropy."""

    uses_unlabeled: ClassVar[bool] = True

    @model_validator(mode="after")
    def _needs_unlabeled(self) -> EntropyMinimizationParams:
        if self.unlabeled != "use":
            raise ValueError(
                f"objective 'entropy_minimization' learns from unlabeled images only; with "
                f"unlabeled: {self.unlabeled} it is cross-entropy; set unlabeled: use"
            )
        return self
