"""``sibnet evaluate``: a trained classifier on the test split → metrics and predictions."""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Any

from sibnet.config import Params
from sibnet.data.tensors import PreparedImages
from sibnet.engine import make_loader
from sibnet.files import atomic_file, sha256_file, write_json
from sibnet.predictions import predictions_frame
from sibnet.reproducibility import configure_torch
from sibnet.stages.common import (
    open_classifier,
    run_description,
    score_loader,
)
from sibnet.tracking import start_run

__all__ = ["evaluate"]

log = logging.getLogger(__name__)


def evaluate(
    params: Params,
    *,
    prepared: Path,
    checkpoint: Path,
    metrics: Path,
    predictions: Path,
    method: str,
    seed: int,
) -> dict[str, Any]:
    """Score ``checkpoint`` on the test split of ``prepared``.

    Writes ``metrics`` (JSON: macro AUC with bootstrap CI, per-class AUC, accuracy, balanced
    accuracy, number of images) and ``predictions`` (Parquet: one row per test image with its id,
    labels and per-class probabilities).

    Raises:
        CheckpointError: the checkpoint is not of the method's architecture or attention kind,
            or was trained on other classes than the dataset's.
    """
    settings = params.evaluate
    configure_torch(settings.threads)
    model, stored, dataset = open_classifier(params, method, checkpoint, prepared)
    test_set = PreparedImages(dataset, "test")
    loader = make_loader(test_set, batch_size=settings.batch_size, shuffle=False, seed=0)

    with start_run(params, stage="evaluate", method=method, seed=seed) as tracker:
        tracker.log_params(
            {"evaluate": settings.model_dump(mode="json"), "method": method, "seed": seed}
        )
        probabilities, targets, results = score_loader(model, loader, dataset, settings)
        results.update(
            {
                **run_description(params, method, seed),
                "split": "test",
                "checkpoint_epoch": int(stored["epoch"]),
                "checkpoint_sha256": sha256_file(checkpoint),
            }
        )
        frame = predictions_frame(
            dataset.manifest["id"].to_numpy()[test_set.rows],
            targets,
            probabilities,
            dataset.classes,
        )
        with atomic_file(predictions) as tmp:
            frame.to_parquet(tmp, index=False)
        write_json(metrics, results)
        log.info(
            "%s seed %d: test macro AUC %.4f (%g%% CI %s) on %d images → %s",
            method,
            seed,
            results["macro_auc"] or float("nan"),
            100 * settings.confidence,
            results["macro_auc_ci"],
            results["n_images"],
            metrics,
        )
        tracker.log_metrics({"test": results})
        tracker.log_artifact(metrics)
        tracker.log_artifact(predictions)
        if tracker.enabled:  # the figure is only an MLflow artifact
            from sibnet.plots.runs import plot_roc

            with tempfile.TemporaryDirectory() as folder:
                figure = Path(folder) / "roc.png"
                plot_roc(
                    probabilities,
                    targets,
                    dataset.classes,
                    results["per_class_auc"],
                    figure,
                    f"{method} · seed {seed} · test",
                )
                tracker.log_artifact(figure)
    return results
