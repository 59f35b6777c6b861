"""``objective: entropy_minimization``: the task loss on the labeled images plus the mean
prediction entropy of the unlabeled ones (params:
:class:`sibnet.objectives.entropy_minimization.EntropyMinimizationParams`)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from sibnet.data.tensors import Batch
from sibnet.losses.objective import Objective, Terms
from sibnet.losses.task import task_loss
from sibnet.objectives.entropy_minimization import EntropyMinimizationParams
from sibnet.objectives.registry import implements

__all__ = ["EntropyMinimizationObjective", "prediction_entropy"]


def prediction_entropy(logits: torch.Tensor, task: str) -> torch.Tensor:
    """Mean entropy (nats) of ``(N, C)`` logits' predictions: the softmax's (``multiclass``)
    or, per image, the mean over labels of each sigmoid's binary entropy (``multilabel``).
    ``N = 0`` gives a zero that still depends on ``logits`` (so backward runs)."""
    if len(logits) == 0:
        return logits.sum() * 0.0
    if task == "multiclass":
        log_p = logits.log_softmax(dim=1)
        return -(log_p.exp() * log_p).sum(dim=1).mean()
    # H(σ(z)) = BCE(z, σ(z)), computed stably from the logits
    probs = logits.sigmoid()
    return F.binary_cross_entropy_with_logits(logits, probs, reduction="none").mean()


@implements(EntropyMinimizationParams)
class EntropyMinimizationObjective(Objective):
    """``loss = task(labeled) + λ · H(unlabeled)`` over one forward pass of the joint batch
    (``image`` ``(B, 1, H, W)``, ``target`` ``(B, C)``, ``labeled`` ``(B,)``; the unlabeled
    images' targets are never read). A batch without ``labeled`` is all labeled (``H = 0``)."""

    def __init__(self, task: nn.Module, *, task_name: str, lambda_entropy: float) -> None:
        super().__init__()
        self.task = task
        self.task_name = task_name
        self.lambda_entropy = lambda_entropy

    @property
    def term_names(self) -> tuple[str, ...]:
        return ("task", "entropy")

    @classmethod
    def from_params(
        cls, params: EntropyMinimizationParams, task: str, class_weights: torch.Tensor | None
    ) -> EntropyMinimizationObjective:
        """The task loss of ``task`` (:func:`sibnet.losses.task.task_loss`) and ``λ``."""
        return cls(
            task_loss(task, class_weights), task_name=task, lambda_entropy=params.lambda_entropy
        )

    def forward(self, model: nn.Module, batch: Batch) -> tuple[torch.Tensor, Terms]:
        logits = model(batch["image"]).float()
        targets = batch["target"]
        labeled = batch.get("labeled")
        if labeled is None:
            labeled = torch.ones(len(logits), dtype=torch.bool, device=logits.device)
        task = self.task(logits[labeled], targets[labeled])
        entropy = prediction_entropy(logits[~labeled], self.task_name)
        loss = self.shared(task, "labeled") + self.lambda_entropy * self.shared(
            entropy, "unlabeled"
        )
        return loss, {"task": task.detach(), "entropy": entropy.detach()}
