"""``sibnet robustness``: test macro AUC of a trained classifier under additive Gaussian noise.

The paper's robustness test (μ = 0, σ ∈ {0.005, 0.01, 0.05, 0.1}) plus the clean images
(σ = 0). Noise is added to the test images in their [0, 1] intensity space — the models' input
space, so no normalisation follows — then clipped to [0, 1] when ``robustness.clip`` is true.

The noise of each σ is drawn from a NumPy generator seeded by ``robustness.noise_seed`` and σ
itself (not its position in the list), image after image in manifest order, so every method
and seed is scored on exactly the same noisy images, and adding a σ leaves the others' noise
unchanged. At σ = 0 the images are untouched and the AUC equals the evaluate stage's.

Each σ's row also records what was really added (``noise_mean_measured``,
``noise_std_measured``, after clipping) and, where the dataset's own pixel noise σ₀ is known
(the phantom's ``noise_std``), the total ``√(σ₀² + std²)``. On the phantom (σ₀ = 0.04) σ =
0.005 and 0.01 raise the total only to about 0.040 and 0.041: nearly clean. Clipping at 0 on
the dark background keeps only the positive half of the noise there, so the added noise is
one-sided (positive mean, std below σ).
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
from sibnet.data.tensors import Batch, PreparedImages
from sibnet.engine import make_loader
from sibnet.files import atomic_file
from sibnet.predictions import predictions_frame
from sibnet.reproducibility import configure_torch
from sibnet.stages.common import (
    open_classifier,
    run_description,
    score_loader,
)
from sibnet.tracking import start_run

__all__ = [
    "ROBUSTNESS_COLUMNS",
    "NoisyImages",
    "intrinsic_noise_std",
    "noise_generator",
    "robustness",
]

log = logging.getLogger(__name__)

ROBUSTNESS_COLUMNS = (
    "dataset",
    "method",
    "seed",
    "sigma",
    "clip",
    "noise_seed",
    "macro_auc",
    "ci_low",
    "ci_high",
    "confidence",
    "bootstrap_resamples",
    "accuracy",
    "balanced_accuracy",
    "n_images",
    "noise_std_measured",
    "noise_mean_measured",
    "intrinsic_noise_std",
    "total_noise_std",
)
"""Columns of ``robustness.parquet`` (then ``auc_<class>`` per class)."""


def noise_generator(noise_seed: int, sigma: float) -> np.random.Generator:
    """The generator of σ's noise: seeded by ``noise_seed`` and σ (in units of 1e-9)."""
    return np.random.default_rng([noise_seed, round(sigma * 1e9)])


class NoisyImages(torch.utils.data.Dataset):
    """A split's :class:`~sibnet.data.tensors.Batch` items with ``N(0, σ²)`` noise added to
    the ``image``, optionally clipped.

    The noise of every image is drawn up front in item order from :func:`noise_generator`
    (``(N, 1, H, W)`` float32), so it does not depend on batch size or worker count.
    """

    def __init__(self, images: PreparedImages, sigma: float, *, clip: bool, noise_seed: int):
        self.images, self.sigma, self.clip = images, sigma, clip
        self.noise = None
        if sigma > 0:
            rng = noise_generator(noise_seed, sigma)
            shape = (len(images), 1, *images.dataset.image_size)
            self.noise = rng.standard_normal(shape, dtype=np.float32) * np.float32(sigma)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> Batch:
        item = self.images[index]
        image = item["image"]
        if self.noise is not None:
            image = image + torch.from_numpy(self.noise[index])
            if self.clip:
                image = image.clamp(0.0, 1.0)
        return {**item, "image": image}

    def injected(self) -> tuple[float, float]:
        """``(mean, std)`` of what was actually added (after clipping), over all pixels.

        Clipping at 0 cuts the negative half of the noise on the dark background (and at 1 the
        positive half on saturated pixels), so the added noise is one-sided there: its mean is
        then positive and its standard deviation below σ.
        """
        if self.noise is None:
            return 0.0, 0.0
        clean = self.images.dataset.images(self.images.rows)  # one gather: (N, 1, H, W)
        noisy = clean + self.noise
        if self.clip:
            noisy = np.clip(noisy, 0.0, 1.0)
        added = noisy - clean
        return float(added.mean(dtype=np.float64)), float(added.std(dtype=np.float64))


def intrinsic_noise_std(dataset: PreparedDataset) -> float:
    """The dataset's own pixel noise σ₀ where it is known (the phantom's ``noise_std``), else
    NaN (real images: unknown)."""
    source = dataset.meta.get("source") or {}
    if source.get("adapter") == "phantom" and source.get("noise_std") is not None:
        return float(source["noise_std"])
    return float("nan")


def robustness(
    params: Params,
    *,
    prepared: Path,
    checkpoint: Path,
    robustness: Path,
    predictions: Path,
    method: str,
    seed: int,
) -> pd.DataFrame:
    """Score ``checkpoint`` on the test split at every noise level of ``robustness.sigmas``.

    Writes ``robustness`` (Parquet, :data:`ROBUSTNESS_COLUMNS` then ``auc_<class>``: one row
    per σ with the macro AUC and its percentile-bootstrap CI over test images) and
    ``predictions`` (Parquet: the evaluate stage's predictions table with a leading ``sigma``
    column, one block of rows per σ; the report pairs methods and seeds on these).

    Returns:
        The robustness table.
    """
    settings = params.robustness
    configure_torch(settings.threads)
    model, _, dataset = open_classifier(params, method, checkpoint, prepared)
    test_set = PreparedImages(dataset, "test")
    ids = dataset.manifest["id"].to_numpy()[test_set.rows]
    own_noise = intrinsic_noise_std(dataset)

    rows: list[dict[str, Any]] = []
    blocks: list[pd.DataFrame] = []
    with start_run(params, stage="robustness", method=method, seed=seed) as tracker:
        tracker.log_params(
            {"robustness": settings.model_dump(mode="json"), "method": method, "seed": seed}
        )
        for sigma in settings.sigmas:
            noisy = NoisyImages(test_set, sigma, clip=settings.clip, noise_seed=settings.noise_seed)
            loader = make_loader(noisy, batch_size=settings.batch_size, shuffle=False, seed=0)
            probs, targets, scores = score_loader(
                model, loader, dataset, settings, description=f"σ={sigma:g}"
            )
            low, high = scores["macro_auc_ci"] or (float("nan"), float("nan"))
            added_mean, added_std = noisy.injected()
            rows.append(
                {
                    **run_description(params, method, seed),
                    "sigma": float(sigma),
                    "clip": settings.clip,
                    "noise_seed": settings.noise_seed,
                    "macro_auc": _nan_if_none(scores["macro_auc"]),
                    "ci_low": low,
                    "ci_high": high,
                    "confidence": settings.confidence,
                    "bootstrap_resamples": scores["bootstrap_resamples"],
                    "accuracy": scores["accuracy"],
                    "balanced_accuracy": scores["balanced_accuracy"],
                    "n_images": scores["n_images"],
                    "noise_std_measured": added_std,
                    "noise_mean_measured": added_mean,
                    "intrinsic_noise_std": own_noise,
                    "total_noise_std": float(np.hypot(own_noise, added_std)),
                    **{
                        f"auc_{name}": _nan_if_none(auc)
                        for name, auc in scores["per_class_auc"].items()
                    },
                }
            )
            block = predictions_frame(ids, targets, probs, dataset.classes)
            block.insert(0, "sigma", float(sigma))
            blocks.append(block)
            log.info(
                "%s seed %d σ=%g: macro AUC %.4f (%g%% CI %.4f–%.4f)",
                method,
                seed,
                sigma,
                rows[-1]["macro_auc"],
                100 * settings.confidence,
                low,
                high,
            )
            tracker.log_metrics(
                {
                    f"sigma_{sigma:g}": {
                        "macro_auc": rows[-1]["macro_auc"],
                        "ci_low": low,
                        "ci_high": high,
                    }
                }
            )
        table = pd.DataFrame(rows)
        with atomic_file(robustness) as tmp:
            table.to_parquet(tmp, index=False)
        with atomic_file(predictions) as tmp:
            pd.concat(blocks, ignore_index=True).to_parquet(tmp, index=False)
        tracker.log_artifact(robustness)
    return table


def _nan_if_none(value: float | None) -> float:
    return float("nan") if value is None else float(value)
