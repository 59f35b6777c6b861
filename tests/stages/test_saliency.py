"""``sibnet saliency``: which maps are scored, and what is written."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from sibnet.config import Params
from sibnet.data.prepared import PreparedDataset
from sibnet.models.classifier import build_classifier, save_checkpoint
from sibnet.stages.saliency import SALIENCY_METRICS, saliency, scored_pairs
from tests.conftest import untracked, with_changes


def test_scored_pairs_are_positive_classes_with_a_mask() -> None:
    labels = np.array([[1, 0, 0], [0, 1, 0], [0, 1, 1], [0, 0, 1]])
    masks = np.zeros((4, 3, 4, 4), dtype=bool)
    masks[1, 1, 0, 0] = True  # positive, masked: scored
    masks[2, 2, 1, 1] = True  # positive, masked: scored
    masks[3, 1, 2, 2] = True  # masked but negative: not scored
    # image 0 (class 0, e.g. "normal") and image 2 class 1 have no mask: not scored
    assert scored_pairs(labels, masks) == [(1, 1), (2, 2)]


def _run(params: Params, prepared: Path, checkpoint: Path, folder: Path) -> pd.DataFrame:
    return saliency(
        params,
        prepared=prepared,
        checkpoint=checkpoint,
        saliency=folder / "saliency.parquet",
        summary=folder / "saliency.json",
        examples=folder / "saliency_examples.npz",
        method="baseline",
        seed=0,
    )


@pytest.fixture(scope="module")
def scored(
    tiny_params: Params, prepared_tiny: Path, trained_tiny: Path, tmp_path_factory
) -> tuple[pd.DataFrame, Path]:
    folder = tmp_path_factory.mktemp("saliency")
    return _run(untracked(tiny_params), prepared_tiny, trained_tiny, folder), folder


def test_every_positive_finding_of_every_annotated_test_image_is_scored(
    scored: tuple[pd.DataFrame, Path], prepared_tiny: Path
) -> None:
    table, _ = scored
    dataset = PreparedDataset.open(prepared_tiny)
    rows = dataset.indices("test")
    labels, masks = dataset.labels[rows], dataset.lesion_masks(rows)
    expected = {
        (dataset.manifest["id"].iloc[rows[i]], dataset.classes[c])
        for i, c in scored_pairs(labels, masks)
    }
    assert set(zip(table["id"], table["class"], strict=True)) == expected
    assert len(table) == len(expected) and "normal" not in set(table["class"])
    for metric in ("dice", "ssim", "dice_raw", "ssim_raw", "hull_fraction"):
        assert table[metric].between(0, 1).all(), metric
    assert (table["mask_pixels"] > 0).all()
    assert table["probability"].between(0, 1).all()
    assert set(table["pointing_hit"]) <= {True, False}


def test_summary_matches_the_rows(scored: tuple[pd.DataFrame, Path]) -> None:
    table, folder = scored
    summary = json.loads((folder / "saliency.json").read_text())
    assert set(summary["metrics"]) == set(SALIENCY_METRICS)
    dice = summary["metrics"]["dice"]
    assert dice["mean"] == pytest.approx(table["dice"].mean())
    assert dice["median"] == pytest.approx(table["dice"].median())
    assert dice["ci_low"] <= dice["mean"] <= dice["ci_high"]
    hd95 = summary["metrics"]["hd95"]
    assert hd95["n"] + hd95["n_undefined"] == len(table)
    assert hd95["n_undefined"] == int(table["hd95"].isna().sum())
    assert summary["n_maps"] == len(table)
    assert summary["empty_binarisation"] == int(table["empty_binarisation"].sum())


def test_overlay_examples_are_the_same_images_for_any_model(
    tiny_params: Params,
    prepared_tiny: Path,
    scored: tuple[pd.DataFrame, Path],
    tmp_path: Path,
) -> None:
    table, folder = scored
    dataset = PreparedDataset.open(prepared_tiny)
    torch.manual_seed(123)
    model = build_classifier("resnet10_small", num_classes=len(dataset.classes))
    other = tmp_path / "untrained.pt"
    save_checkpoint(
        other,
        model,
        architecture="resnet10_small",
        num_classes=len(dataset.classes),
        in_channels=1,
        attention="none",
        classes=dataset.classes,
        task=dataset.task,
        optimizer=None,
        epoch=0,
        metrics={},
        params_sha256="0" * 64,
    )
    _run(untracked(tiny_params), prepared_tiny, other, tmp_path)
    first = np.load(folder / "saliency_examples.npz")
    second = np.load(tmp_path / "saliency_examples.npz")
    n = tiny_params.saliency.overlay_images
    assert first["id"].tolist() == second["id"].tolist() == list(dict.fromkeys(table["id"]))[:n]
    np.testing.assert_array_equal(first["image"], second["image"])
    np.testing.assert_array_equal(first["mask"], second["mask"])
    assert first["saliency"].shape == (n, *dataset.image_size)
    assert first["saliency"].min() >= 0 and first["saliency"].max() <= 1
    assert first["hull"].dtype == bool
    assert not np.array_equal(first["saliency"], second["saliency"])


def test_max_images_caps_the_scored_images(
    tiny_params: Params, prepared_tiny: Path, trained_tiny: Path, tmp_path: Path
) -> None:
    params = with_changes(untracked(tiny_params), saliency={"max_images": 4, "threshold": "top10%"})
    table = _run(params, prepared_tiny, trained_tiny, tmp_path)
    assert table["id"].nunique() <= 4
    assert not table["empty_binarisation"].any()  # top-k% always keeps some pixels
