"""The task losses on ``(B, C)`` logits and ``(B, C)`` float targets: softmax cross-entropy
(multi-class, one-hot targets) and binary cross-entropy per label (multi-label, unknown labels
-1 masked out), and the batch-inverse-frequency cross-entropy of the original SIBnet code."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "MaskedBCEWithLogits",
    "OneHotCrossEntropy",
    "batch_inverse_frequency_cross_entropy",
    "task_loss",
]


class OneHotCrossEntropy(nn.Module):
    """Softmax cross-entropy on ``(B, C)`` logits and ``(B, C)`` one-hot targets.

    Raises:
        ValueError: in ``forward``, if the targets contain unknown labels (-1).
    """

    def __init__(self, weight: torch.Tensor | None = None) -> None:
        super().__init__()
        self.loss = nn.CrossEntropyLoss(weight=weight)

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        if bool((targets < 0).any()):
            raise ValueError("unknown (-1) labels are only supported in multilabel tasks")
        return self.loss(logits, targets.argmax(dim=1))


class MaskedBCEWithLogits(nn.BCEWithLogitsLoss):
    """Binary cross-entropy with logits that ignores unknown labels (-1).

    ``forward(logits, targets)`` takes ``(B, C)`` logits and ``(B, C)`` float targets in
    ``{0, 1, -1}``; -1 marks an unknown label (see :mod:`sibnet.data.prepared`). The loss is the
    elementwise BCE (``pos_weight`` as in :class:`torch.nn.BCEWithLogitsLoss`) summed over the
    known entries and divided by their number (at least 1), a scalar. Unknown entries contribute
    nothing, and their logits get exactly zero gradient. With 0/1 targets this is the usual
    mean over all entries.
    """

    def __init__(self, pos_weight: torch.Tensor | None = None) -> None:
        super().__init__(pos_weight=pos_weight)

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        known = targets >= 0
        elementwise = nn.functional.binary_cross_entropy_with_logits(
            logits,
            torch.where(known, targets, torch.zeros_like(targets)),
            pos_weight=self.pos_weight,
            reduction="none",
        )
        return (elementwise * known.to(elementwise.dtype)).sum() / known.sum().clamp(min=1)


def task_loss(task: str, class_weights: torch.Tensor | None = None) -> nn.Module:
    """The task's loss on ``(B, C)`` logits and ``(B, C)`` float targets, a scalar.

    Multi-class: softmax cross-entropy on one-hot 0/1 targets (``class_weights`` ``(C,)``
    weight each class); targets containing -1 raise ``ValueError``.
    Multi-label: binary cross-entropy per label (``class_weights`` ``(C,)`` act as
    ``pos_weight``), averaged over the known entries: unknown labels (-1), see
    :mod:`sibnet.data.prepared`, are masked out of the loss (:class:`MaskedBCEWithLogits`).
    With 0/1 targets it equals :class:`torch.nn.BCEWithLogitsLoss` (mean over all entries).
    """
    if task == "multiclass":
        return OneHotCrossEntropy(class_weights)
    if task == "multilabel":
        return MaskedBCEWithLogits(pos_weight=class_weights)
    raise ValueError(f"task must be 'multiclass' or 'multilabel', got {task!r}")


def batch_inverse_frequency_cross_entropy(
    logits: torch.Tensor, targets: torch.Tensor
) -> torch.Tensor:
    """Softmax cross-entropy weighted by each class's inverse frequency in this batch.

    The original SIBnet training loop's task loss: weights ``1 / (n_c / B)`` for the classes
    present in the batch (absent classes have no image to weight), then PyTorch's weighted mean
    ``Σ_i w_{y_i} l_i / Σ_i w_{y_i}``, so every class present carries the same total weight.

    Args:
        logits: ``(B, C)``.
        targets: ``(B, C)`` one-hot.
    """
    counts = targets.sum(dim=0)
    weights = torch.where(counts > 0, len(targets) / counts.clamp_min(1), torch.zeros_like(counts))
    return F.cross_entropy(logits, targets.argmax(dim=1), weight=weights.to(logits.dtype))
