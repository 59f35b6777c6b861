"""``objective: cross_entropy``: the task loss alone (params:
:class:`sibnet.objectives.cross_entropy.CrossEntropyParams`)."""

from __future__ import annotations

import torch
from torch import nn

from sibnet.data.tensors import Batch
from sibnet.losses.objective import Objective, Terms
from sibnet.losses.task import task_loss
from sibnet.objectives.cross_entropy import CrossEntropyParams
from sibnet.objectives.registry import implements

__all__ = ["TaskObjective"]


@implements(CrossEntropyParams)
class TaskObjective(Objective):
    """The task loss alone on ``model(batch["image"])``: ``image`` ``(B, 1, H, W)``,
    ``target`` ``(B, C)`` (0/1, -1 unknown in multi-label tasks)."""

    def __init__(self, task: nn.Module) -> None:
        super().__init__()
        self.task = task

    @classmethod
    def from_params(
        cls, params: CrossEntropyParams, task: str, class_weights: torch.Tensor | None
    ) -> TaskObjective:
        """The task loss of ``task`` (:func:`sibnet.losses.task.task_loss`)."""
        return cls(task_loss(task, class_weights))

    def forward(self, model: nn.Module, batch: Batch) -> tuple[torch.Tensor, Terms]:
        labeled = batch.get("labeled")
        if labeled is not None and not bool(labeled.all()):
            raise ValueError(
                "objective 'cross_entropy' has no term for unlabeled images, but the batch "
                "holds some (a method with it trains with unlabeled: ignore or oracle)"
            )
        loss = self.task(model(batch["image"]).float(), batch["target"])
        return loss, {"task": loss.detach()}
