"""``sibnet saliency``: Grad-CAM maps of a trained classifier scored against the lesion masks.

For each annotated test image (manifest ``has_lesion_masks``) and each class that is positive
in its labels and has a non-empty lesion mask, that class's Grad-CAM map (on the network's last
feature map, see :mod:`sibnet.saliency.gradcam`) is upsampled bilinearly to the input
resolution and scored with :func:`sibnet.metrics.saliency.saliency_agreement`: scaled to
[0, 1], binarised (``saliency.threshold``), replaced by its convex hull, and compared with the
mask by Dice, HD95 (pixels) and SSIM — and the same without the hull, and the pointing game.

Normal images (no positive class with a mask) are not scored. Positive classes whose mask is
empty are counted in the summary (``skipped_empty_masks``) but not scored: there is nothing to
localise. The first ``saliency.overlay_images`` scored images (manifest order, their first
scored class) are the same for every method; their maps go to the examples file for the
report's overlay figure.

A dataset without lesion masks (or with none on the test split, or whose annotated test images
have no positive finding with a non-empty mask) leaves nothing to score. The stage then still
writes its outputs: no rows (same columns and dtypes), a summary with ``n_maps`` 0, ``null``
means and a ``skipped`` reason (``null`` when maps were scored), zero-length examples; and
logs a warning. Without any annotated test image Grad-CAM is not run at all.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from sibnet.config import Params
from sibnet.engine import probabilities
from sibnet.files import atomic_file, write_json, write_npz
from sibnet.metrics.bootstrap import summarise
from sibnet.metrics.saliency import (
    binarise,
    convex_hull_mask,
    saliency_agreement,
    scale_to_unit,
)
from sibnet.reproducibility import configure_torch
from sibnet.saliency.gradcam import logits_and_grad_cam, upsample
from sibnet.stages.common import open_classifier, run_description
from sibnet.tracking import start_run

__all__ = ["NOTHING_TO_SCORE", "SALIENCY_COLUMNS", "SALIENCY_METRICS", "saliency", "scored_pairs"]

log = logging.getLogger(__name__)

SALIENCY_METRICS = ("dice", "hd95", "ssim", "dice_raw", "hd95_raw", "ssim_raw", "pointing_hit")
"""Per-map scores summarised per method (``pointing_hit`` as a hit rate)."""

SALIENCY_COLUMNS = {
    "dataset": "str",
    "method": "str",
    "seed": "int64",
    "id": "str",
    "class": "str",
    "probability": "float64",
    "mask_pixels": "int64",
    "dice": "float64",
    "hd95": "float64",
    "ssim": "float64",
    "dice_raw": "float64",
    "hd95_raw": "float64",
    "ssim_raw": "float64",
    "pointing_hit": "bool",
    "empty_binarisation": "bool",
    "hull_degenerate": "bool",
    "hull_fraction": "float64",
}
"""Columns of ``saliency.parquet`` (one row per scored image × class) and their pandas dtypes:
the run, the image and class, the class probability, the mask's pixel count and every score of
:func:`~sibnet.metrics.saliency.saliency_agreement`."""

NOTHING_TO_SCORE = "no annotated test image has a positive class with a lesion mask"
"""The start of the summary's ``skipped`` reason when no map could be scored."""


def _table(records: list[dict[str, Any]]) -> pd.DataFrame:
    return pd.DataFrame(records, columns=list(SALIENCY_COLUMNS)).astype(SALIENCY_COLUMNS)


def _why_nothing(n_test: int, n_checked: int) -> str:
    if n_checked == 0:
        return (
            f"{NOTHING_TO_SCORE} (none of the {n_test} test images has lesion masks: the "
            "dataset has no lesion masks, or none on the test split)"
        )
    return (
        f"{NOTHING_TO_SCORE} (the {n_checked} annotated test images checked have no positive "
        "class with a non-empty lesion mask)"
    )


def scored_pairs(labels: np.ndarray, masks: np.ndarray) -> list[tuple[int, int]]:
    """``(image index, class index)`` pairs to score: positive classes with a non-empty mask.

    Args:
        labels: ``(n, C)`` 0/1 labels.
        masks: ``(n, C, H, W)`` bool lesion masks.
    """
    present = masks.any(axis=(2, 3))
    return [(int(i), int(c)) for i, c in np.argwhere((labels > 0) & present)]


def saliency(
    params: Params,
    *,
    prepared: Path,
    checkpoint: Path,
    saliency: Path,
    summary: Path,
    examples: Path,
    method: str,
    seed: int,
) -> pd.DataFrame:
    """Score the Grad-CAM maps of ``checkpoint`` on the annotated test images.

    Writes ``saliency`` (Parquet: one row per scored image × class with ``id``, ``class``, the
    class probability, the mask's pixel count and every score of
    :func:`~sibnet.metrics.saliency.saliency_agreement`), ``summary`` (JSON: per score the
    mean, median, bootstrap CI of the mean, counts) and ``examples`` (``.npz``: ``image``,
    ``mask``, ``saliency`` (scaled to [0, 1]), ``hull`` ``(N, H, W)``, ``id`` and ``class``
    ``(N,)`` of the overlay images).

    When nothing can be scored (see the module docstring) the outputs are written empty, the
    summary's ``skipped`` says why, and a warning is logged.

    Returns:
        The per-map table.
    """
    settings = params.saliency
    configure_torch(settings.threads)
    model, _, dataset = open_classifier(params, method, checkpoint, prepared)
    manifest = dataset.manifest
    rows_all = dataset.indices("test")
    annotated = rows_all[manifest["has_lesion_masks"].to_numpy()[rows_all]]
    if settings.max_images is not None:
        annotated = annotated[: settings.max_images]
    height, width = dataset.image_size

    records: list[dict[str, Any]] = []
    shown: dict[str, list[Any]] = {k: [] for k in ("image", "mask", "saliency", "hull", "id")}
    shown["class"] = []
    unmasked = np.zeros(len(dataset.classes), dtype=np.int64)  # positive, empty mask
    with start_run(params, stage="saliency", method=method, seed=seed) as tracker:
        tracker.log_params(
            {"saliency": settings.model_dump(mode="json"), "method": method, "seed": seed}
        )
        # No annotated test image (e.g. a dataset without lesion masks): no Grad-CAM at all.
        for start in range(0, len(annotated), settings.batch_size):
            rows = annotated[start : start + settings.batch_size]
            images = dataset.images(rows)
            masks = dataset.lesion_masks(rows)
            labels = dataset.labels[rows]
            pairs = scored_pairs(labels, masks)
            unmasked += ((labels > 0) & ~masks.any(axis=(2, 3))).sum(axis=0)
            if not pairs:
                continue
            logits, maps = logits_and_grad_cam(model, torch.from_numpy(images))
            probs = probabilities(logits.detach(), dataset.task).numpy()
            maps = upsample(maps, (height, width)).numpy()
            for i, c in pairs:
                scores = saliency_agreement(maps[i, c], masks[i, c], threshold=settings.threshold)
                image_id = str(manifest["id"].iloc[rows[i]])
                records.append(
                    {
                        **run_description(params, method, seed),
                        "id": image_id,
                        "class": dataset.classes[c],
                        "probability": float(probs[i, c]),
                        "mask_pixels": int(masks[i, c].sum()),
                        **scores,
                    }
                )
                first_of_image = not shown["id"] or shown["id"][-1] != image_id
                if first_of_image and len(shown["id"]) < settings.overlay_images:
                    scaled = scale_to_unit(maps[i, c])
                    shown["image"].append(images[i, 0])
                    shown["mask"].append(masks[i, c])
                    shown["saliency"].append(scaled.astype(np.float32))
                    shown["hull"].append(convex_hull_mask(binarise(maps[i, c], settings.threshold)))
                    shown["id"].append(image_id)
                    shown["class"].append(dataset.classes[c])

        table = _table(records)
        skipped = _why_nothing(len(rows_all), len(annotated)) if table.empty else None
        # Positives with an empty mask, of classes that are localised elsewhere (not "normal").
        localised = sorted({dataset.classes.index(c) for c in table["class"]})
        results = {"skipped": skipped, **_summary(table, settings, int(unmasked[localised].sum()))}
        results.update(run_description(params, method, seed))
        with atomic_file(saliency) as tmp:
            table.to_parquet(tmp, index=False)
        write_json(summary, results)
        write_npz(examples, _stack(shown, (height, width)))
        if skipped is not None:
            log.warning(
                "%s seed %d: saliency not scored, %s (%s); empty outputs → %s",
                method,
                seed,
                skipped,
                prepared,
                saliency,
            )
            tracker.log_params({"skipped": skipped})
        else:
            log.info(
                "%s seed %d: %d maps, Dice %.3f, HD95 %.2f px, SSIM %.3f, pointing %.3f → %s",
                method,
                seed,
                len(table),
                *(results["metrics"][k]["mean"] or float("nan") for k in ("dice", "hd95", "ssim")),
                results["metrics"]["pointing_hit"]["mean"],
                saliency,
            )
        tracker.log_metrics(
            {k: v["mean"] for k, v in results["metrics"].items() if v["mean"] is not None}
        )
        tracker.log_artifact(saliency)
        tracker.log_artifact(summary)
    return table


def _summary(table: pd.DataFrame, settings: Any, skipped: int) -> dict[str, Any]:
    metrics = {
        name: summarise(
            table[name].to_numpy(np.float64),
            resamples=settings.bootstrap,
            confidence=settings.confidence,
            seed=settings.seed,
        )
        for name in SALIENCY_METRICS
    }
    return {
        "metrics": metrics,
        "per_class_dice": table.groupby("class")["dice"].mean().round(6).to_dict(),
        "n_maps": len(table),
        "n_images": int(table["id"].nunique()),
        "skipped_empty_masks": skipped,
        "empty_binarisation": int(table["empty_binarisation"].sum()),
        "hull_degenerate": int(table["hull_degenerate"].sum()),
        "threshold": settings.threshold,
        "confidence": settings.confidence,
    }


def _stack(shown: dict[str, list[Any]], size: tuple[int, int]) -> dict[str, np.ndarray]:
    if not shown["id"]:
        empty = np.zeros((0, *size))
        return {
            "image": empty.astype(np.float32),
            "mask": empty.astype(bool),
            "saliency": empty.astype(np.float32),
            "hull": empty.astype(bool),
            "id": np.array([], dtype=str),
            "class": np.array([], dtype=str),
        }
    return {
        "image": np.stack(shown["image"]).astype(np.float32),
        "mask": np.stack(shown["mask"]),
        "saliency": np.stack(shown["saliency"]),
        "hull": np.stack(shown["hull"]),
        "id": np.array(shown["id"], dtype=str),
        "class": np.array(shown["class"], dtype=str),
    }
