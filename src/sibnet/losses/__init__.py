"""Training losses, one file each: the task losses (``task``), the training objectives a
method's ``objective:`` key chooses (the base and :func:`build_objective` in ``objective``;
``cross_entropy``, ``sibnet_objective``, ``entropy_minimization``), SIBnet's class
distinctiveness and spatial coherence (``sibnet``) and the faithfulness term aimed at their
collapse (``faithfulness``).

Each objective's params (torch-free) are in :mod:`sibnet.objectives`; importing this package
registers the built-in objectives' implementations for them.
"""

from __future__ import annotations

from sibnet.losses.cross_entropy import TaskObjective
from sibnet.losses.entropy_minimization import EntropyMinimizationObjective, prediction_entropy
from sibnet.losses.faithfulness import erasure_mask, faithfulness
from sibnet.losses.objective import Objective, Terms, build_objective
from sibnet.losses.sibnet import (
    ClassDistinctivenessLoss,
    SpatialCoherenceLoss,
    class_distinctiveness,
    connected_components,
    otsu_threshold,
    salient_region,
    spatial_coherence,
)
from sibnet.losses.sibnet_objective import SibnetObjective
from sibnet.losses.task import (
    MaskedBCEWithLogits,
    OneHotCrossEntropy,
    batch_inverse_frequency_cross_entropy,
    task_loss,
)

__all__ = [
    "ClassDistinctivenessLoss",
    "EntropyMinimizationObjective",
    "MaskedBCEWithLogits",
    "Objective",
    "OneHotCrossEntropy",
    "SibnetObjective",
    "SpatialCoherenceLoss",
    "TaskObjective",
    "Terms",
    "batch_inverse_frequency_cross_entropy",
    "build_objective",
    "class_distinctiveness",
    "connected_components",
    "erasure_mask",
    "faithfulness",
    "otsu_threshold",
    "prediction_entropy",
    "salient_region",
    "spatial_coherence",
    "task_loss",
]
