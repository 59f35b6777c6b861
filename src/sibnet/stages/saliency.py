"""``sibnet saliency``: Grad-CAM maps of a trained classifier scored against the lesion masks.

For each annotated test image (manifest ``has_lesion_masks``) and each class that is positive
in its labels and has a non-empty lesion mask, that class's Grad-CAM map (on the network's last
feature map, or on ``saliency.layer``; see :mod:`sibnet.saliency.gradcam`) is upsampled
bilinearly to the input resolution and scored with
:func:`sibnet.metrics.saliency.saliency_agreement`: scaled to [0, 1], binarised
(``saliency.threshold``), replaced by its convex hull, and compared with the mask by Dice, HD95
(pixels) and SSIM — and the same without the hull, the pointing game and the energy-based
pointing game (mass inside the lesion, and inside the body: :func:`~sibnet.metrics.saliency.
body_mask` of the image).

Every scored (image, class) item is also scored with two label-only reference maps, the same
for every method (rows with ``map`` ``prior`` and ``uniform``; Grad-CAM rows have ``map``
``gradcam``):

- **prior**: the mean lesion mask of that class over the annotated *training* images where the
  class is positive (the same map for every test image): what knowing the class and the anatomy
  alone gives, with no look at the image;
- **uniform**: a constant map, the chance level (its binarisation is empty, so Dice 0 and HD95
  undefined; SSIM shows what an empty prediction scores; its pointing games equal the mask's
  and the body's area fractions).

Each Grad-CAM row also says whether the image was classified correctly for that class
(``correct``: the arg-max class for a multi-class task, probability ≥ ``evaluate.threshold``
for a multi-label one), the map's maximum before scaling (``map_max``) and whether it is
``negligible`` (at most ``saliency.negligible`` × the median ``map_max`` of the run's maps).

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
from sibnet.data.prepared import PreparedDataset
from sibnet.engine import probabilities
from sibnet.files import atomic_file, write_json, write_npz
from sibnet.metrics.bootstrap import summarise
from sibnet.metrics.classification import decisions
from sibnet.metrics.saliency import (
    binarise,
    body_mask,
    convex_hull_mask,
    saliency_agreement,
    scale_to_unit,
)
from sibnet.reproducibility import configure_torch
from sibnet.saliency.gradcam import cam_layer, logits_and_grad_cam, upsample
from sibnet.stages.common import open_classifier, run_description
from sibnet.tracking import start_run

__all__ = [
    "NOTHING_TO_SCORE",
    "REFERENCE_MAPS",
    "SALIENCY_COLUMNS",
    "SALIENCY_METRICS",
    "prior_maps",
    "saliency",
    "scored_pairs",
]

log = logging.getLogger(__name__)

SALIENCY_METRICS = (
    "dice",
    "hd95",
    "ssim",
    "dice_raw",
    "hd95_raw",
    "ssim_raw",
    "pointing_hit",
    "energy_lesion",
    "energy_body",
)
"""Per-map scores summarised per method (``pointing_hit`` as a hit rate)."""

REFERENCE_MAPS = ("prior", "uniform")
"""The label-only maps scored beside every Grad-CAM map (``map`` column)."""

SALIENCY_COLUMNS = {
    "dataset": "str",
    "method": "str",
    "seed": "int64",
    "id": "str",
    "class": "str",
    "map": "str",
    "probability": "float64",
    "correct": "bool",
    "mask_pixels": "int64",
    "dice": "float64",
    "hd95": "float64",
    "ssim": "float64",
    "dice_raw": "float64",
    "hd95_raw": "float64",
    "ssim_raw": "float64",
    "pointing_hit": "float64",
    "energy_lesion": "float64",
    "energy_body": "float64",
    "map_max": "float64",
    "negligible": "bool",
    "empty_binarisation": "bool",
    "hull_degenerate": "bool",
    "hull_fraction": "float64",
}
"""Columns of ``saliency.parquet`` (one row per scored image × class × map, ``map`` one of
``gradcam`` and :data:`REFERENCE_MAPS`) and their pandas dtypes: the run, the image and class,
the class probability and whether it was classified correctly, the mask's pixel count, every
score of :func:`~sibnet.metrics.saliency.saliency_agreement` and the ``negligible`` flag
(Grad-CAM rows only; ``False`` for the reference maps)."""

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


def prior_maps(dataset: PreparedDataset, batch_size: int = 256) -> np.ndarray:
    """Mean lesion mask of each class over the annotated training images where it is positive.

    Returns:
        ``(C, H, W)`` float64 maps in [0, 1]; all zeros for a class without such an image.
    """
    rows = dataset.indices("train")
    rows = rows[dataset.manifest["has_lesion_masks"].to_numpy()[rows]]
    totals = np.zeros((len(dataset.classes), *dataset.image_size))
    counts = np.zeros(len(dataset.classes))
    for start in range(0, len(rows), batch_size):
        chunk = rows[start : start + batch_size]
        positive = (dataset.labels[chunk] > 0).astype(np.float64)  # (n, C)
        masks = dataset.lesion_masks(chunk)  # (n, C, H, W)
        totals += np.einsum("nc,nchw->chw", positive, masks.astype(np.float64))
        counts += positive.sum(axis=0)
    return totals / np.maximum(counts, 1.0)[:, None, None]


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
    layer = cam_layer(model, settings.layer)
    priors = prior_maps(dataset) if len(annotated) else None
    uniform = np.ones((height, width))

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
            logits, maps = logits_and_grad_cam(model, torch.from_numpy(images), layer=layer)
            probs = probabilities(logits.detach(), dataset.task).numpy()
            correct = decisions(probs, dataset.task, params.evaluate.threshold).astype(bool)
            maps = upsample(maps, (height, width)).numpy()
            bodies: dict[int, np.ndarray] = {}
            for i, c in pairs:
                image_id = str(manifest["id"].iloc[rows[i]])
                if i not in bodies:
                    bodies[i] = body_mask(images[i, 0])
                item = {
                    **run_description(params, method, seed),
                    "id": image_id,
                    "class": dataset.classes[c],
                    "probability": float(probs[i, c]),
                    "correct": bool(correct[i, c]),
                    "mask_pixels": int(masks[i, c].sum()),
                    "negligible": False,
                }
                for name, saliency_map in (
                    ("gradcam", maps[i, c]),
                    ("prior", priors[c]),
                    ("uniform", uniform),
                ):
                    scores = saliency_agreement(
                        saliency_map, masks[i, c], threshold=settings.threshold, body=bodies[i]
                    )
                    records.append({**item, "map": name, **scores})
                first_of_image = not shown["id"] or shown["id"][-1] != image_id
                if first_of_image and len(shown["id"]) < settings.overlay_images:
                    scaled = scale_to_unit(maps[i, c])
                    shown["image"].append(images[i, 0])
                    shown["mask"].append(masks[i, c])
                    shown["saliency"].append(scaled.astype(np.float32))
                    shown["hull"].append(convex_hull_mask(binarise(maps[i, c], settings.threshold)))
                    shown["id"].append(image_id)
                    shown["class"].append(dataset.classes[c])

        table = _flag_negligible(_table(records), settings.negligible)
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
                results["n_maps"],
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


def _flag_negligible(table: pd.DataFrame, fraction: float) -> pd.DataFrame:
    """Set ``negligible`` on the Grad-CAM rows whose ``map_max`` is at most ``fraction`` × the
    median ``map_max`` of those rows."""
    gradcam = table["map"] == "gradcam"
    if gradcam.any():
        cut = fraction * float(table.loc[gradcam, "map_max"].median())
        table.loc[gradcam, "negligible"] = table.loc[gradcam, "map_max"] <= cut
    return table


def _summary(table: pd.DataFrame, settings: Any, skipped: int) -> dict[str, Any]:
    """The summary JSON's numbers: Grad-CAM maps' scores, and the reference maps' means."""
    gradcam = table[table["map"] == "gradcam"]
    metrics = {
        name: summarise(
            gradcam[name].to_numpy(np.float64),
            resamples=settings.bootstrap,
            confidence=settings.confidence,
            seed=settings.seed,
        )
        for name in SALIENCY_METRICS
    }
    reference = {
        name: {
            metric: (None if np.isnan(value) else round(float(value), 6))
            for metric, value in table.loc[table["map"] == name, list(SALIENCY_METRICS)]
            .astype(np.float64)
            .mean()
            .items()
        }
        for name in REFERENCE_MAPS
    }
    return {
        "metrics": metrics,
        "reference_maps": reference,
        "per_class_dice": gradcam.groupby("class")["dice"].mean().round(6).to_dict(),
        "n_maps": len(gradcam),
        "n_images": int(gradcam["id"].nunique()),
        "skipped_empty_masks": skipped,
        "empty_binarisation": int(gradcam["empty_binarisation"].sum()),
        "hull_degenerate": int(gradcam["hull_degenerate"].sum()),
        "negligible_maps": int(gradcam["negligible"].sum()),
        "correct": int(gradcam["correct"].sum()),
        "threshold": settings.threshold,
        "layer": settings.layer,
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
