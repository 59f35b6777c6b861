"""``sibnet segment``: segmentation from a trained classifier's encoder (the transfer recipe).

For one method × seed, a U-Net-style decoder (:class:`~sibnet.models.segmenter.Segmenter`) is
trained on the organ masks named in ``segment.structures`` (the phantom's lung fields by
default), once per mode of ``segment.modes`` (and, for the method ``segment.reference``, of
``segment.reference_modes`` too; see :func:`~sibnet.config.segment_modes`):

- ``frozen`` — the classifier's encoder exactly as trained (weights and normalisation
  statistics fixed, no backward pass through it); only the decoder learns. The paper's recipe:
  it measures what the classification objective put into the encoder.
- ``finetune`` — the trained encoder learns too (transfer + adaptation).
- ``scratch`` — the same network from random initialisation (seeded by the run's seed), end to
  end: the no-transfer reference.

Every mode trains with the same data and settings: Adam with a cosine schedule, Dice + binary
cross-entropy per structure, on the first ``segment.max_train_images`` annotated training images,
keeping the epoch with the best mean Dice on the first ``segment.max_val_images`` validation
images. On every annotated test
image the sigmoid outputs thresholded at 0.5 are scored per structure with Dice and HD95
(pixels; :mod:`sibnet.metrics.masks`). Training and prediction run on ``segment.device``
(``auto``: CUDA when a GPU is visible, else the CPU, where results are bit-identical run to
run), in float32.

An empty ``segment.structures`` (a dataset without organ masks) skips all of this: the stage
neither loads the classifier nor trains anything, and writes its declared outputs empty — no
rows, no segmenters, zero-length examples — with ``"skipped": "segment.structures is empty"`` in
the summary (``null`` there in a run that did segment), so that the report can leave
segmentation out and say why.
"""

from __future__ import annotations

import copy
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from sibnet.config import Params, ParamsError, segment_modes
from sibnet.data.prepared import PreparedDataset, PreparedError
from sibnet.data.tensors import OrganMaskBatch, PreparedOrganMasks
from sibnet.engine import make_loader, resolve_device, to_device, train_epoch
from sibnet.files import atomic_dir, atomic_file, sha256_file, write_json, write_npz
from sibnet.metrics.bootstrap import summarise
from sibnet.metrics.masks import dice, hd95
from sibnet.models.classifier import build_classifier, load_checkpoint
from sibnet.models.segmenter import Segmenter, save_segmenter, segmentation_loss
from sibnet.reproducibility import configure_torch, seed_everything
from sibnet.stages.common import open_classifier, run_description
from sibnet.tracking import start_run

__all__ = ["SEGMENTATION_COLUMNS", "SEGMENTATION_DTYPES", "SKIPPED_NO_STRUCTURES", "segment"]

log = logging.getLogger(__name__)

SEGMENTATION_COLUMNS = (
    "dataset",
    "method",
    "seed",
    "mode",
    "id",
    "structure",
    "dice",
    "hd95",
    "truth_pixels",
    "predicted_pixels",
)
"""Columns of ``segmentation.parquet``: one row per mode × test image × structure."""

SEGMENTATION_DTYPES = {
    "dataset": "str",
    "method": "str",
    "seed": "int64",
    "mode": "str",
    "id": "str",
    "structure": "str",
    "dice": "float64",
    "hd95": "float64",
    "truth_pixels": "int64",
    "predicted_pixels": "int64",
}
"""The pandas dtype of each of :data:`SEGMENTATION_COLUMNS` (the same whether or not empty)."""

SKIPPED_NO_STRUCTURES = "segment.structures is empty"
"""The summary's ``skipped`` reason when there is nothing to segment."""

_FIX = "set segment.structures: [] to skip segmentation"


def _table(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """The rows as :data:`SEGMENTATION_COLUMNS` with :data:`SEGMENTATION_DTYPES`."""
    return pd.DataFrame(rows, columns=list(SEGMENTATION_COLUMNS)).astype(SEGMENTATION_DTYPES)


def _annotated(
    dataset: PreparedDataset, split: str, limit: int | None, structures: list[str]
) -> np.ndarray:
    rows = dataset.indices(split)
    rows = rows[dataset.manifest["has_organ_masks"].to_numpy()[rows]]
    if len(rows) == 0:
        raise PreparedError(
            f"{dataset.root}: no {split} image has organ masks, but segment.structures is "
            f"{list(structures)}; for a dataset without organ masks, {_FIX}"
        )
    return rows if limit is None else rows[:limit]


@torch.no_grad()
def _predict(
    model: nn.Module, images: PreparedOrganMasks, batch_size: int, device: torch.device
) -> np.ndarray:
    """``(N, K, H, W)`` bool predicted masks (sigmoid > 0.5) of every item, in order; the model
    must be on ``device``."""
    model.eval()
    loader = make_loader(images, batch_size=batch_size, shuffle=False, seed=0)
    return np.concatenate(
        [(model(to_device(batch["image"], device)) > 0).cpu().numpy() for batch in loader]
    )


def _truth(images: PreparedOrganMasks) -> np.ndarray:
    return images.dataset.organ_masks(images.rows)[:, images.channels]


def _mean_dice(predicted: np.ndarray, truth: np.ndarray) -> float:
    return float(
        np.mean(
            [
                dice(p, t)
                for p_img, t_img in zip(predicted, truth, strict=True)
                for p, t in zip(p_img, t_img, strict=True)
            ]
        )
    )


def _train_mode(
    mode: str,
    params: Params,
    method: str,
    seed: int,
    checkpoint: Path,
    train_set: PreparedOrganMasks,
    val_set: PreparedOrganMasks,
    tracker: Any,
    device: torch.device,
) -> tuple[Segmenter, dict[str, Any]]:
    """Train one mode on ``device``; returns the best-epoch segmenter (on ``device``) and its
    epoch and validation Dice."""
    settings = params.segment
    spec = params.method(method)
    seed_everything(seed)
    if mode == "scratch":
        classifier = build_classifier(
            spec.architecture,
            len(train_set.dataset.classes),
            attention=spec.attention,
            reduction=spec.attention_reduction,
            min_hidden=spec.attention_min_hidden,
        )
    else:
        classifier, _ = load_checkpoint(
            checkpoint, architecture=spec.architecture, attention=spec.attention
        )
    model = Segmenter(classifier, spec.architecture, len(train_set.channels), mode=mode).to(device)
    optimizer = torch.optim.Adam(model.trainable_parameters(), lr=settings.learning_rate)
    loader = make_loader(
        train_set,
        batch_size=settings.batch_size,
        shuffle=True,
        seed=seed,
        pin_memory=device.type == "cuda",
    )
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(
        optimizer, T_max=settings.epochs * len(loader)
    )
    loss_fn = segmentation_loss()
    val_truth = _truth(val_set)

    def objective(net: nn.Module, batch: OrganMaskBatch):
        return loss_fn(net(batch["image"]), batch["organ_masks"]), {}

    best: dict[str, Any] = {}
    for epoch in range(1, settings.epochs + 1):
        terms = train_epoch(model, loader, objective, optimizer, scheduler=scheduler, device=device)
        val_dice = _mean_dice(_predict(model, val_set, settings.batch_size, device), val_truth)
        log.info(
            "%s seed %d %s epoch %d/%d: train_loss %.4f val_dice %.4f",
            method,
            seed,
            mode,
            epoch,
            settings.epochs,
            terms["loss"],
            val_dice,
        )
        tracker.log_metrics(
            {f"{mode}.train_loss": terms["loss"], f"{mode}.val_dice": val_dice}, step=epoch
        )
        if not best or val_dice > best["val_dice"]:
            best = {
                "epoch": epoch,
                "val_dice": val_dice,
                "state": copy.deepcopy(model.state_dict()),
            }
    model.load_state_dict(best.pop("state"))
    return model.eval(), best


def segment(
    params: Params,
    *,
    prepared: Path,
    checkpoint: Path,
    segmenters: Path,
    segmentation: Path,
    summary: Path,
    examples: Path,
    method: str,
    seed: int,
) -> pd.DataFrame:
    """Train and score a segmenter of each mode of :func:`~sibnet.config.segment_modes`.

    Writes ``segmenters`` (a folder: ``<mode>.pt`` per mode, see
    :func:`~sibnet.models.segmenter.save_segmenter`; each names the SHA-256 of ``checkpoint``),
    ``segmentation`` (Parquet, :data:`SEGMENTATION_COLUMNS`), ``summary`` (JSON: per mode and
    structure, Dice and HD95 mean / median / bootstrap CI; the best epoch and its validation
    Dice) and ``examples`` (``.npz``: ``image`` ``(N, H, W)``, ``truth`` ``(N, K, H, W)``,
    ``pred_<mode>`` ``(N, K, H, W)``, ``id`` ``(N,)``, ``structures`` ``(K,)``, for the report's
    figure: the first ``segment.figure_images`` test images, the same for every method).

    With an empty ``segment.structures`` the classifier is not loaded and nothing is trained
    (only the dataset's image size is read and the checkpoint hashed): ``segmenters`` is an empty
    folder, ``segmentation`` has no rows (same columns and dtypes), ``summary`` says
    ``"skipped": "segment.structures is empty"`` (its per-mode summaries empty: ``null`` means,
    ``n`` 0) and the examples are zero-length (``N = K = 0``, same keys).

    Raises:
        CheckpointError: the checkpoint is not of the method's architecture or attention kind,
            or was trained on other classes than the dataset's.
        ParamsError: a structure of ``segment.structures`` is not an organ of the dataset.
        PreparedError: a split has no image with organ masks (while ``segment.structures`` is
            not empty).
    """
    settings = params.segment
    outputs = {
        "segmenters": segmenters,
        "segmentation": segmentation,
        "summary": summary,
        "examples": examples,
    }
    if not settings.structures:
        return _skip(params, prepared, checkpoint, outputs, method, seed)
    device = resolve_device(settings.device, "segment.device")
    configure_torch(settings.threads, warn_only=device.type == "cuda")
    _, _, dataset = open_classifier(params, method, checkpoint, prepared)  # checks the kind
    unknown = [s for s in settings.structures if s not in dataset.organs]
    if unknown:
        hint = f"; this dataset has no organ masks: {_FIX}" if not dataset.organs else ""
        raise ParamsError(
            f"segment.structures: {unknown} are not organ masks of {prepared}; "
            f"accepted: {dataset.organs}{hint}"
        )
    structures = settings.structures
    train_set = PreparedOrganMasks(
        dataset, _annotated(dataset, "train", settings.max_train_images, structures), structures
    )
    val_set = PreparedOrganMasks(
        dataset, _annotated(dataset, "val", settings.max_val_images, structures), structures
    )
    test_set = PreparedOrganMasks(
        dataset, _annotated(dataset, "test", None, structures), settings.structures
    )
    truth = _truth(test_set)
    ids = dataset.manifest["id"].to_numpy()[test_set.rows]
    classifier_sha256 = sha256_file(checkpoint)
    shown = min(settings.figure_images, len(test_set))
    figure: dict[str, np.ndarray] = {
        "image": dataset.images(test_set.rows[:shown])[:, 0],
        "truth": truth[:shown],
        "id": ids[:shown].astype(str),
        "structures": np.array(settings.structures, dtype=str),
    }

    rows: list[dict[str, Any]] = []
    results: dict[str, Any] = {
        "skipped": None,
        "modes": {},
        "classifier_sha256": classifier_sha256,
    }
    with (
        start_run(params, stage="segment", method=method, seed=seed) as tracker,
        atomic_dir(segmenters) as folder,
    ):
        tracker.log_params(
            {"segment": settings.model_dump(mode="json"), "method": method, "seed": seed}
        )
        for mode in segment_modes(params, method):
            model, best = _train_mode(
                mode, params, method, seed, checkpoint, train_set, val_set, tracker, device
            )
            spec = params.method(method)
            save_segmenter(
                folder / f"{mode}.pt",
                model,
                attention=spec.attention,
                reduction=spec.attention_reduction,
                min_hidden=spec.attention_min_hidden,
                classifier_classes=len(dataset.classes),
                structures=settings.structures,
                epoch=best["epoch"],
                metrics={"val_dice": best["val_dice"]},
                classifier_sha256=None if mode == "scratch" else classifier_sha256,
                extra=run_description(params, method, seed),
            )
            predicted = _predict(model, test_set, settings.batch_size, device)
            figure[f"pred_{mode}"] = predicted[:shown]
            for i, image_id in enumerate(ids):
                for k, structure in enumerate(settings.structures):
                    rows.append(
                        {
                            **run_description(params, method, seed),
                            "mode": mode,
                            "id": str(image_id),
                            "structure": structure,
                            "dice": dice(predicted[i, k], truth[i, k]),
                            "hd95": hd95(predicted[i, k], truth[i, k]),
                            "truth_pixels": int(truth[i, k].sum()),
                            "predicted_pixels": int(predicted[i, k].sum()),
                        }
                    )
            table = _table(rows)
            own = table[table["mode"] == mode]
            results["modes"][mode] = {
                "best_epoch": best["epoch"],
                "val_dice": best["val_dice"],
                **{
                    metric: summarise(
                        own[metric].to_numpy(np.float64),
                        resamples=settings.bootstrap,
                        confidence=settings.confidence,
                        seed=settings.seed,
                    )
                    for metric in ("dice", "hd95")
                },
                "per_structure_dice": own.groupby("structure")["dice"].mean().round(6).to_dict(),
            }
            log.info(
                "%s seed %d %s: test Dice %.4f, HD95 %.2f px (best epoch %d)",
                method,
                seed,
                mode,
                results["modes"][mode]["dice"]["mean"],
                results["modes"][mode]["hd95"]["mean"] or float("nan"),
                best["epoch"],
            )
            tracker.log_metrics(
                {f"test.{mode}.{m}": results["modes"][mode][m]["mean"] for m in ("dice", "hd95")}
            )
        results.update(
            {
                **run_description(params, method, seed),
                "n_images": len(test_set),
                "structures": settings.structures,
                "confidence": settings.confidence,
            }
        )
        with atomic_file(segmentation) as tmp:
            table.to_parquet(tmp, index=False)
        write_json(summary, results)
        write_npz(examples, figure)
        tracker.log_artifact(segmentation)
        tracker.log_artifact(summary)
    return table


def _skip(
    params: Params,
    prepared: Path,
    checkpoint: Path,
    outputs: dict[str, Path],
    method: str,
    seed: int,
) -> pd.DataFrame:
    """Write every output of :func:`segment` empty, saying why (``segment.structures`` is [])."""
    settings = params.segment
    modes = segment_modes(params, method)
    height, width = PreparedDataset.open(prepared, verify=False).image_size
    table = _table([])
    nothing = np.zeros(0, dtype=np.float64)
    results: dict[str, Any] = {
        "skipped": SKIPPED_NO_STRUCTURES,
        "modes": {
            mode: {
                "best_epoch": None,
                "val_dice": None,
                **{
                    metric: summarise(
                        nothing,
                        resamples=settings.bootstrap,
                        confidence=settings.confidence,
                        seed=settings.seed,
                    )
                    for metric in ("dice", "hd95")
                },
                "per_structure_dice": {},
            }
            for mode in modes
        },
        "classifier_sha256": sha256_file(checkpoint),
        **run_description(params, method, seed),
        "n_images": 0,
        "structures": [],
        "confidence": settings.confidence,
    }
    masks = np.zeros((0, 0, height, width), dtype=bool)
    figure = {
        "image": np.zeros((0, height, width), dtype=np.float32),
        "truth": masks,
        **{f"pred_{mode}": masks for mode in modes},
        "id": np.array([], dtype=str),
        "structures": np.array([], dtype=str),
    }
    log.info(
        "%s seed %d: segmentation skipped (%s); writing empty outputs",
        method,
        seed,
        SKIPPED_NO_STRUCTURES,
    )
    with (
        start_run(params, stage="segment", method=method, seed=seed) as tracker,
        atomic_dir(outputs["segmenters"]),
    ):
        tracker.log_params(
            {
                "segment": settings.model_dump(mode="json"),
                "method": method,
                "seed": seed,
                "skipped": SKIPPED_NO_STRUCTURES,
            }
        )
        with atomic_file(outputs["segmentation"]) as tmp:
            table.to_parquet(tmp, index=False)
        write_json(outputs["summary"], results)
        write_npz(outputs["examples"], figure)
        tracker.log_artifact(outputs["segmentation"])
        tracker.log_artifact(outputs["summary"])
    return table
