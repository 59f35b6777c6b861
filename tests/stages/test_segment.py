"""``sibnet segment``: frozen encoders stay bit-identical, lineage, rows, errors, learning, and
the empty outputs of a skipped segmentation (``segment.structures: []``)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import torch

from sibnet.config import Params, ParamsError, validate_params
from sibnet.data.prepared import PreparedDataset, PreparedError
from sibnet.files import sha256_file
from sibnet.models.classifier import CheckpointError, load_checkpoint
from sibnet.models.segmenter import Segmenter, load_segmenter
from sibnet.stages.segment import (
    SEGMENTATION_COLUMNS,
    SEGMENTATION_DTYPES,
    SKIPPED_NO_STRUCTURES,
    segment,
)
from tests.conftest import captured_logs, rewritten, untracked, with_changes

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
    # Params validation refuses a structure the source does not provide; the stage checks again
    # against the dataset on disk (which other params may have prepared).
    params = untracked(tiny_params)
    segment_params = params.segment.model_copy(update={"structures": ["liver"]})
    params = params.model_copy(update={"segment": segment_params})
    with pytest.raises(ParamsError, match=r"segment.structures: \['liver'\].*lung_left"):
        _segment(params, prepared_tiny, trained_tiny, tmp_path)


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is visible")
def test_segment_device_cuda_without_a_gpu_is_refused_before_any_work(
    tiny_params: Params, prepared_tiny: Path, trained_tiny: Path, tmp_path: Path
) -> None:
    params = with_changes(untracked(tiny_params), segment={"device": "cuda"})
    refused = r"segment\.device is 'cuda' but torch\.cuda\.is_available\(\) is False"
    with pytest.raises(ParamsError, match=refused):
        _segment(params, prepared_tiny, trained_tiny, tmp_path)
    assert list(tmp_path.iterdir()) == []


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


def _without_organ_masks(source: Path, dest: Path, *, organs: bool) -> Path:
    """``source`` rewritten without organ masks (``has_organ_masks`` all False); ``organs``:
    whether ``dataset.json`` still names the organs (else it names none, as a dataset whose
    source has no organ masks at all)."""
    dataset = PreparedDataset.open(source)
    rewritten(source, dest, organ_masks=False, organs=None if organs else [])
    opened = PreparedDataset.open(dest)
    assert not opened.manifest["has_organ_masks"].any()
    assert opened.organs == (dataset.organs if organs else [])
    return dest


@pytest.fixture(scope="module")
def no_organ_masks(prepared_tiny: Path, tmp_path_factory) -> Path:
    """The tiny phantom as a dataset without organ masks (and naming no organs)."""
    return _without_organ_masks(
        prepared_tiny, tmp_path_factory.mktemp("no-organs") / "tiny", organs=False
    )


def test_structures_without_annotated_images_point_to_the_fix(
    tiny_params: Params, prepared_tiny: Path, trained_tiny: Path, tmp_path: Path
) -> None:
    # The organs are named in dataset.json, but no image has organ masks: a configuration
    # mistake (segment.structures should be []), not something to skip silently.
    prepared = _without_organ_masks(prepared_tiny, tmp_path / "unannotated", organs=True)
    params = untracked(tiny_params)
    assert params.segment.structures  # the default: the lung fields
    with pytest.raises(
        PreparedError,
        match=r"no train image has organ masks.*set segment\.structures: \[\] to skip segmentation",
    ):
        _segment(params, prepared, trained_tiny, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_structures_of_a_dataset_without_organs_point_to_the_fix(
    tiny_params: Params, no_organ_masks: Path, trained_tiny: Path, tmp_path: Path
) -> None:
    with pytest.raises(
        ParamsError,
        match=r"accepted: \[\]; this dataset has no organ masks: set segment\.structures: \[\]",
    ):
        _segment(untracked(tiny_params), no_organ_masks, trained_tiny, tmp_path)
    assert not (tmp_path / "segmenters").exists()


@pytest.fixture(scope="module")
def skipped(
    tiny_params: Params, no_organ_masks: Path, trained_tiny: Path, mlflow_uri: str, tmp_path_factory
) -> tuple[pd.DataFrame, Path, list[logging.LogRecord]]:
    """``segment.structures: []`` on a dataset without organ masks, tracked in the test
    session's MLflow store; nothing may open the classifier or train."""
    from sibnet.stages import segment as stage

    params = with_changes(tiny_params, segment={"structures": []})
    assert params.tracking.enabled
    folder = tmp_path_factory.mktemp("segment-skipped")

    def refuse(*args, **kwargs):
        raise AssertionError("a skipped segmentation opened the classifier or trained")

    with pytest.MonkeyPatch.context() as patch, captured_logs(stage.__name__) as records:
        patch.setenv("MLFLOW_TRACKING_URI", mlflow_uri)  # the autouse fixture is per test
        for name in ("open_classifier", "load_checkpoint", "build_classifier", "_train_mode"):
            patch.setattr(stage, name, refuse)
        table = _segment(params, no_organ_masks, trained_tiny, folder)
    return table, folder, records


def test_skipped_segmentation_writes_every_output_empty(skipped) -> None:
    table, folder, records = skipped
    assert (folder / "segmenters").is_dir() and not any((folder / "segmenters").iterdir())
    assert table.empty and list(table.columns) == list(SEGMENTATION_COLUMNS)
    assert table.dtypes.astype(str).to_dict() == SEGMENTATION_DTYPES
    stored = pd.read_parquet(folder / "segmentation.parquet")
    assert stored.empty
    pd.testing.assert_frame_equal(stored, table)
    summary = json.loads((folder / "segmentation.json").read_text())
    assert summary["skipped"] == SKIPPED_NO_STRUCTURES == "segment.structures is empty"
    infos = [r for r in records if r.levelno == logging.INFO]
    assert len(infos) == 1 and SKIPPED_NO_STRUCTURES in infos[0].getMessage()
    assert not [r for r in records if r.levelno >= logging.WARNING]


def test_skipped_segmentation_outputs_have_the_shape_of_a_normal_run(
    segmented: tuple[pd.DataFrame, Path, Params], skipped, trained_tiny: Path
) -> None:
    normal_table, normal, _ = segmented
    table, folder, _ = skipped
    # Parquet: the same Arrow schema, and the same pandas dtypes read back.
    schema = pq.read_schema(folder / "segmentation.parquet")
    assert schema.remove_metadata().equals(
        pq.read_schema(normal / "segmentation.parquet").remove_metadata()
    )
    assert table.dtypes.equals(normal_table.dtypes)
    assert pd.read_parquet(folder / "segmentation.parquet").dtypes.equals(
        pd.read_parquet(normal / "segmentation.parquet").dtypes
    )
    # JSON: the same keys, per mode too, with empty summaries.
    summary = json.loads((folder / "segmentation.json").read_text())
    expected = json.loads((normal / "segmentation.json").read_text())
    assert expected["skipped"] is None
    assert set(summary) == set(expected)
    assert set(summary["modes"]) == set(expected["modes"]) == set(MODES)  # baseline: reference
    for mode in MODES:
        assert set(summary["modes"][mode]) == set(expected["modes"][mode])
        for metric in ("dice", "hd95"):
            empty = summary["modes"][mode][metric]
            assert set(empty) == set(expected["modes"][mode][metric])
            assert empty["mean"] is None and empty["n"] == 0
        assert summary["modes"][mode]["best_epoch"] is None
        assert summary["modes"][mode]["per_structure_dice"] == {}
    assert summary["n_images"] == 0 and summary["structures"] == []
    assert (summary["dataset"], summary["method"], summary["seed"]) == ("tiny", "baseline", 0)
    assert summary["classifier_sha256"] == sha256_file(trained_tiny)
    # Examples: the same keys and dtypes, no image.
    arrays = np.load(folder / "segmentation_examples.npz")
    reference = np.load(normal / "segmentation_examples.npz")
    assert set(arrays.files) == set(reference.files)
    for key in reference.files:
        assert len(arrays[key]) == 0, key
        assert arrays[key].ndim == reference[key].ndim, key
        assert arrays[key].dtype.kind == reference[key].dtype.kind, key
        assert arrays[key].shape[2:] == reference[key].shape[2:], key


def test_skipped_segmentation_is_recorded_in_mlflow(skipped, mlflow_uri: str) -> None:
    import mlflow

    mlflow.set_tracking_uri(mlflow_uri)
    runs = mlflow.search_runs(
        experiment_names=["sibnet-tiny"],
        filter_string="tags.`sibnet.stage` = 'segment' and params.skipped != ''",
    )
    assert len(runs) == 1
    run = runs.iloc[0]
    assert run["params.skipped"] == SKIPPED_NO_STRUCTURES
    assert run["tags.sibnet.method"] == "baseline" and run["status"] == "FINISHED"
