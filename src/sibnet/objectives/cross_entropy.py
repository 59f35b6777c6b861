"""``objective: cross_entropy``: the task loss alone (the default objective).

The params half of the objective (torch-free); the loss is
:class:`sibnet.losses.cross_entropy.TaskObjective`.
"""

from __future__ import annotations

from typing import ClassVar, Literal

from sibnet.objectives.registry import ObjectiveParams, register_objective

__all__ = ["CrossEntropyParams"]


@register_objective
class CrossEntropyParams(ObjectiveParams):
    """A method trained with the task loss alone: softmax cross-entropy (multi-class) or
    per-label binary cross-entropy (multi-label), see :func:`sibnet.losses.task.task_loss`.
    It has no keys beyond the shared ones."""

    objective: Literal["cross_entropy"] = "cross_entropy"

    terms: ClassVar[tuple[str, ...]] = ("task",)
