"""Pieces shared by the stages that score a trained classifier on the test split."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from torch import nn
from torch.utils.data import DataLoader

from sibnet.config import EvaluateParams, Params, RobustnessParams
from sibnet.data.prepared import PreparedDataset
from sibnet.engine import predict
from sibnet.metrics.classification import classification_metrics
from sibnet.models.classifier import CheckpointError, load_checkpoint

__all__ = [
    "open_classifier",
    "run_description",
    "score_loader",
]


def open_classifier(
    params: Params, method: str, checkpoint: Path, prepared: Path
) -> tuple[nn.Module, dict[str, Any], PreparedDataset]:
    """Load ``method``'s checkpoint and the prepared dataset it is scored on.

    Returns:
        ``(model, stored, dataset)``: the model in eval mode, the checkpoint's stored fields and
        the opened (hash-verified) dataset.

    Raises:
        CheckpointError: the checkpoint is not of the method's architecture or attention kind,
            or was trained on other classes than the dataset's.
    """
    dataset = PreparedDataset.open(prepared, verify=True)
    spec = params.method(method)
    model, stored = load_checkpoint(
        checkpoint, architecture=spec.architecture, attention=spec.attention
    )
    if stored["classes"] != dataset.classes or stored["task"] != dataset.task:
        raise CheckpointError(
            f"{checkpoint}: trained for {stored['task']} classes {stored['classes']}, but "
            f"{prepared} is {dataset.task} with classes {dataset.classes}"
        )
    return model.eval(), stored, dataset


def score_loader(
    model: nn.Module,
    loader: DataLoader,
    dataset: PreparedDataset,
    settings: EvaluateParams | RobustnessParams,
    *,
    description: str = "predict",
) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Predict over ``loader`` and score the predictions (macro AUC with bootstrap CI, ...).

    Returns:
        ``(probabilities (N, C), targets (N, C), metrics)``; ``metrics`` as
        :func:`~sibnet.metrics.classification.classification_metrics`, with the bootstrap
        settings (and the multi-label decision threshold, where given) of ``settings``.
    """
    probabilities, targets, _ = predict(model, loader, dataset.task, description=description)
    metrics = classification_metrics(
        probabilities,
        targets,
        task=dataset.task,
        classes=dataset.classes,
        resamples=settings.bootstrap,
        confidence=settings.confidence,
        seed=settings.seed,
        threshold=getattr(settings, "threshold", 0.5),
    )
    return probabilities, targets, metrics


def run_description(params: Params, method: str, seed: int) -> dict[str, Any]:
    """The columns that say which run a result row belongs to."""
    return {"dataset": params.prepare.dataset, "method": method, "seed": seed}
