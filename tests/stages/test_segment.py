"""``sibnet segment``: frozen encoders stay bit-identical, lineage, rows, errors, learning."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from sibnet.config import Params, ParamsError, validate_params
from sibnet.data.prepared import PreparedDataset
from sibnet.files import sha256_file
from sibnet.models.classifier import CheckpointError, load_checkpoint
from sibnet.models.segmenter import Segmenter, load_segmenter
from sibnet.stages.segment import SEGMENTATION_COLUMNS, segment
from tests.conftest import untracked, with_changes

MODES = ["frozen", "finetune", "scratch"]


def _segment(params: Params, prepared: Path, checkpoint: Path, folder: Path, method="baseline"):
    return segment(
        params,
        prepared=prepared,
        checkpoint=checkpoint,
        segmenters=folder / "segmenters",
        segmentation=folder / "segmentation.parquet",
        summary=folder / "segmentation.json",
        examples=folder / "segmentation_examples.npz",
        method=method,
        seed=0,
    )


@pytest.fixture(scope="module")
def segmented(
    tiny_params: Params, prepared_tiny: Path, trained_tiny: Path, tmp_path_factory
) -> tuple[pd.DataFrame, Path, Params]:
    # Eight epochs on the tiny phantom's 52 training images (64×64): enough to learn the lungs.
    params = with_changes(
        untracked(tiny_params),
        segment={"epochs": 8, "max_train_images": None, "max_val_images": None},
    )
    folder = tmp_path_factory.mktemp("segment")
    return _segment(params, prepared_tiny, trained_tiny, folder), folder, params


def test_frozen_encoder_is_bit_identical_to_the_classifier(
    segmented: tuple[pd.DataFrame, Path, Params], trained_tiny: Path
) -> None:
    _, folder, _ = segmented
    trained, stored = load_segmenter(folder / "segmenters" / "frozen.pt")
    classifier, _ = load_checkpoint(trained_tiny)
    untouched = Segmenter(classifier, "resnet10_small", trained.num_outputs, mode="frozen")
    after, before = trained.encoder.state_dict(), untouched.encoder.state_dict()
    assert after.keys() == before.keys() and len(after) > 0
    for key in before:  # weights and BatchNorm statistics
        assert torch.equal(after[key], before[key]), key
    assert stored["epoch"] >= 1
    finetuned, _ = load_segmenter(folder / "segmenters" / "finetune.pt")
    changed = finetuned.encoder.state_dict()
    assert any(not torch.equal(changed[k], before[k]) for k in before)


def test_segmenter_checkpoints_name_the_classifier_they_came_from(
    segmented: tuple[pd.DataFrame, Path, Params], trained_tiny: Path
) -> None:
    _, folder, params = segmented
    assert sorted(p.name for p in (folder / "segmenters").iterdir()) == [
        f"{m}.pt" for m in sorted(MODES)
    ]
    for mode in MODES:
        _, stored = load_segmenter(folder / "segmenters" / f"{mode}.pt")
        expected = None if mode == "scratch" else sha256_file(trained_tiny)
        assert stored["classifier_sha256"] == expected and stored["mode"] == mode
        assert stored["structures"] == params.segment.structures


def test_rows_cover_every_mode_test_image_and_structure(
    segmented: tuple[pd.DataFrame, Path, Params], prepared_tiny: Path
) -> None:
    table, folder, params = segmented
    dataset = PreparedDataset.open(prepared_tiny)
    n_test = len(dataset.indices("test"))
    assert list(table.columns) == list(SEGMENTATION_COLUMNS)
    assert len(table) == len(MODES) * n_test * len(params.segment.structures)
    assert table["dice"].between(0, 1).all() and (table["truth_pixels"] > 0).all()
    pd.testing.assert_frame_equal(pd.read_parquet(folder / "segmentation.parquet"), table)
    summary = json.loads((folder / "segmentation.json").read_text())
    for mode in MODES:
        own = table[table["mode"] == mode]
        assert summary["modes"][mode]["dice"]["mean"] == pytest.approx(own["dice"].mean())
    examples = np.load(folder / "segmentation_examples.npz")
    shown = params.segment.figure_images
    assert examples["truth"].shape == (shown, 2, *dataset.image_size)
    assert {f"pred_{m}" for m in MODES} <= set(examples.files)


def test_a_tiny_run_learns_the_lung_fields(segmented: tuple[pd.DataFrame, Path, Params]) -> None:
    table, _, _ = segmented
    dice = table.groupby("mode")["dice"].mean()
    # Stated threshold: after 8 epochs on 52 images of 64×64, mean test Dice > 0.6 in every
    # mode (an empty prediction scores 0; the lungs cover about a fifth of the image).
    assert (dice > 0.6).all(), dice.to_dict()


def test_a_checkpoint_of_the_wrong_kind_is_refused(
    tiny_params: Params, prepared_tiny: Path, trained_tiny: Path, tmp_path: Path
) -> None:
    # The tiny params' "sibnet" method has SE attention; trained_tiny is the plain baseline.
    with pytest.raises(CheckpointError, match="attention 'none', but 'se'"):
        _segment(untracked(tiny_params), prepared_tiny, trained_tiny, tmp_path, method="sibnet")
    assert not (tmp_path / "segmenters").exists()


def test_an_unknown_structure_is_refused(
    tiny_params: Params, prepared_tiny: Path, trained_tiny: Path, tmp_path: Path
) -> None:
    params = with_changes(untracked(tiny_params), segment={"structures": ["liver"]})
    with pytest.raises(ParamsError, match=r"segment.structures: \['liver'\].*lung_left"):
        _segment(params, prepared_tiny, trained_tiny, tmp_path)


def test_other_methods_train_only_segment_modes(
    tiny_params: Params, prepared_tiny: Path, trained_tiny: Path, tmp_path: Path
) -> None:
    # trained_tiny is the baseline; as a method "plain" (same network) it is not the reference.
    raw = untracked(tiny_params).model_dump(mode="json")
    raw["methods"]["plain"] = raw["methods"]["baseline"]
    raw["pipeline"]["methods"] = ["baseline", "plain"]
    raw["segment"].update({"epochs": 1, "max_train_images": 8, "max_val_images": 4})
    params = validate_params(raw)
    table = _segment(params, prepared_tiny, trained_tiny, tmp_path, method="plain")
    assert set(table["mode"]) == {"frozen"}
    assert [p.name for p in (tmp_path / "segmenters").iterdir()] == ["frozen.pt"]


def test_load_segmenter_refuses_a_classifier_checkpoint(trained_tiny: Path) -> None:
    with pytest.raises(CheckpointError, match="not a sibnet segmenter checkpoint"):
        load_segmenter(trained_tiny)
