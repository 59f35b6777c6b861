"""``sibnet saliency``: which maps are scored, and what is written (also when none can be)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import torch

from sibnet.config import Params
from sibnet.data.prepared import PreparedDataset
from sibnet.metrics.saliency import body_mask, saliency_agreement
from sibnet.models.classifier import build_classifier, save_checkpoint
from sibnet.stages.saliency import (
    NOTHING_TO_SCORE,
    REFERENCE_MAPS,
    SALIENCY_COLUMNS,
    SALIENCY_METRICS,
    prior_maps,
    saliency,
    scored_pairs,
)
from tests.conftest import captured_logs, rewritten, untracked, with_changes


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
    # Every item once per map: Grad-CAM, prior and uniform.
    for name in ("gradcam", *REFERENCE_MAPS):
        block = table[table["map"] == name]
        assert set(zip(block["id"], block["class"], strict=True)) == expected
        assert len(block) == len(expected)
    assert "normal" not in set(table["class"])
    gradcam = table[table["map"] == "gradcam"]
    for metric in ("dice", "ssim", "dice_raw", "ssim_raw", "hull_fraction"):
        assert gradcam[metric].between(0, 1).all(), metric
    for metric in ("energy_lesion", "energy_body"):  # NaN: a map with no positive mass
        energy = gradcam[metric]
        assert (energy.between(0, 1) | (energy.isna() & (gradcam["map_max"] <= 0))).all()
    assert (table["mask_pixels"] > 0).all()
    assert table["probability"].between(0, 1).all()
    # A hit is 0 or 1, except for an all-zero map, whose pixels all tie (the mask fraction).
    tied = ~gradcam["pointing_hit"].isin([0.0, 1.0])
    assert (gradcam.loc[tied, "map_max"] <= 0).all()
    assert gradcam["pointing_hit"].between(0, 1).all()


def test_reference_maps_equal_direct_computations(
    scored: tuple[pd.DataFrame, Path], prepared_tiny: Path
) -> None:
    """The prior map is the class's mean training mask; the uniform map is constant."""
    table, _ = scored
    dataset = PreparedDataset.open(prepared_tiny)
    train = dataset.indices("train")
    train = train[dataset.manifest["has_lesion_masks"].to_numpy()[train]]
    priors = prior_maps(dataset)
    test = dataset.indices("test")
    position = {dataset.manifest["id"].iloc[r]: r for r in test}
    for _, row in table[table["map"] != "gradcam"].iterrows():
        c = dataset.classes.index(row["class"])
        positive = train[dataset.labels[train, c] > 0]
        prior = dataset.lesion_masks(positive)[:, c].mean(axis=0)
        np.testing.assert_allclose(priors[c], prior)
        image = dataset.images([position[row["id"]]])[0, 0]
        mask = dataset.lesion_masks([position[row["id"]]])[0, c]
        body = body_mask(image)
        if row["map"] == "prior":
            direct = saliency_agreement(prior, mask, body=body)
        else:
            direct = {
                "dice": 0.0,  # an empty binarisation
                "hd95": np.nan,
                "pointing_hit": mask.mean(),  # every pixel ties: the mask's area fraction
                "energy_lesion": mask.mean(),
                "energy_body": body.mean(),
            }
        for metric, value in direct.items():
            if metric in ("dice", "hd95", "pointing_hit", "energy_lesion", "energy_body"):
                assert row[metric] == pytest.approx(value, nan_ok=True), (row["map"], metric)
    prior_rows = table[table["map"] == "prior"]
    assert not prior_rows["negligible"].any()


def test_correct_flags_the_decision_for_the_class(
    scored: tuple[pd.DataFrame, Path], prepared_tiny: Path
) -> None:
    table, _ = scored
    gradcam = table[table["map"] == "gradcam"]
    classes = len(PreparedDataset.open(prepared_tiny).classes)
    # Multi-class: correct iff the class's probability is the largest; a probability above
    # 1/2 is always the arg-max and one below 1/C never is.
    assert gradcam.loc[gradcam["probability"] > 0.5, "correct"].all()
    assert not gradcam.loc[gradcam["probability"] < 1 / classes, "correct"].any()
    assert gradcam["correct"].any() and not gradcam["correct"].all()


def test_negligible_maps_are_flagged_against_the_run_median(
    tiny_params: Params,
    prepared_tiny: Path,
    trained_tiny: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A map of magnitude 1e-7 × the others is flagged, though min–max scaling makes it
    full range."""
    import sibnet.stages.saliency as stage

    original = stage.upsample
    calls: list[int] = []

    def weak_first(maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        out = original(maps, size).clone()
        if not calls:
            out[0] *= 1e-7
        calls.append(1)
        return out

    monkeypatch.setattr(stage, "upsample", weak_first)
    table = _run(untracked(tiny_params), prepared_tiny, trained_tiny, tmp_path)
    gradcam = table[table["map"] == "gradcam"]
    first = gradcam["id"].iloc[0]
    assert gradcam.loc[gradcam["id"] == first, "negligible"].all()
    others = gradcam[gradcam["id"] != first]
    assert (others.loc[others["negligible"], "map_max"] <= 0).all()  # only all-zero maps
    assert not others["negligible"].all()
    summary = json.loads((tmp_path / "saliency.json").read_text())
    assert summary["negligible_maps"] == int(gradcam["negligible"].sum())


def test_an_earlier_layer_gives_finer_maps(
    tiny_params: Params, prepared_tiny: Path, trained_tiny: Path, tmp_path: Path
) -> None:
    params = with_changes(untracked(tiny_params), saliency={"layer": "layer3"})
    table = _run(params, prepared_tiny, trained_tiny, tmp_path)
    assert json.loads((tmp_path / "saliency.json").read_text())["layer"] == "layer3"
    assert (table["map"] == "gradcam").sum() > 0
    bad = with_changes(untracked(tiny_params), saliency={"layer": "layer9"})
    with pytest.raises(ValueError, match="no module 'layer9' for Grad-CAM; accepted"):
        _run(bad, prepared_tiny, trained_tiny, tmp_path / "bad")


def test_summary_matches_the_rows(scored: tuple[pd.DataFrame, Path]) -> None:
    table, folder = scored
    summary = json.loads((folder / "saliency.json").read_text())
    reference = table[table["map"] == "prior"]
    assert summary["reference_maps"]["prior"]["dice"] == pytest.approx(reference["dice"].mean())
    table = table[table["map"] == "gradcam"]
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
    shown = list(dict.fromkeys(table["id"]))[:n]
    assert first["id"].tolist() == second["id"].tolist() == shown
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
    # top-k% always keeps some pixels of a non-constant map (the uniform map is constant)
    assert not table.loc[table["map"] != "uniform", "empty_binarisation"].any()


def test_rows_have_the_declared_columns_and_dtypes(scored: tuple[pd.DataFrame, Path]) -> None:
    table, folder = scored
    assert list(table.columns) == list(SALIENCY_COLUMNS)
    assert table.dtypes.astype(str).to_dict() == SALIENCY_COLUMNS
    # Every score saliency_agreement gives has its column (none is dropped).
    scores = saliency_agreement(np.eye(8), np.eye(8, dtype=bool))
    assert set(scores) <= set(SALIENCY_COLUMNS)
    pd.testing.assert_frame_equal(pd.read_parquet(folder / "saliency.parquet"), table)
    assert json.loads((folder / "saliency.json").read_text())["skipped"] is None


def _relabelled(source: Path, dest: Path, *, lesion_masks: str) -> Path:
    """``source`` rewritten with lesion masks ``"none"`` (the dataset has none) or ``"empty"``
    (annotated, but every mask empty: nothing to localise)."""
    rewritten(source, dest, lesion_masks=lesion_masks)
    flags = PreparedDataset.open(dest).manifest["has_lesion_masks"]
    assert flags.all() if lesion_masks == "empty" else not flags.any()
    return dest


@pytest.fixture(scope="module", params=["none", "empty"])
def unscorable(
    request: pytest.FixtureRequest,
    tiny_params: Params,
    prepared_tiny: Path,
    trained_tiny: Path,
    mlflow_uri: str,
    tmp_path_factory,
) -> tuple[str, pd.DataFrame, Path, list[logging.LogRecord]]:
    """Saliency on a dataset without lesion masks (``none``: Grad-CAM must not even run), or
    with only empty ones (``empty``), tracked in the test session's MLflow store."""
    from sibnet.stages import saliency as stage

    kind = request.param
    folder = tmp_path_factory.mktemp(f"saliency-{kind}")
    prepared = _relabelled(prepared_tiny, folder / "prepared", lesion_masks=kind)
    with pytest.MonkeyPatch.context() as patch, captured_logs(stage.__name__) as records:
        patch.setenv("MLFLOW_TRACKING_URI", mlflow_uri)  # the autouse fixture is per test
        if kind == "none":

            def refuse(*args, **kwargs):
                raise AssertionError("Grad-CAM ran without any annotated test image")

            patch.setattr(stage, "logits_and_grad_cam", refuse)
        table = _run(tiny_params, prepared, trained_tiny, folder)
    return kind, table, folder, records


def test_nothing_to_score_writes_empty_outputs_that_say_why(unscorable) -> None:
    kind, table, folder, records = unscorable
    assert table.empty and list(table.columns) == list(SALIENCY_COLUMNS)
    assert table.dtypes.astype(str).to_dict() == SALIENCY_COLUMNS
    stored = pd.read_parquet(folder / "saliency.parquet")
    assert stored.empty
    pd.testing.assert_frame_equal(stored, table)
    summary = json.loads((folder / "saliency.json").read_text())
    assert summary["n_maps"] == 0 and summary["n_images"] == 0
    assert summary["skipped"].startswith(NOTHING_TO_SCORE)
    why = "the dataset has no lesion masks" if kind == "none" else "non-empty lesion mask"
    assert why in summary["skipped"]
    for name in SALIENCY_METRICS:
        assert summary["metrics"][name]["mean"] is None and summary["metrics"][name]["n"] == 0
    warnings = [r for r in records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and summary["skipped"] in warnings[0].getMessage()


def test_nothing_to_score_outputs_have_the_shape_of_a_normal_run(
    scored: tuple[pd.DataFrame, Path], unscorable
) -> None:
    normal_table, normal = scored
    _, table, folder, _ = unscorable
    schema = pq.read_schema(folder / "saliency.parquet")
    assert schema.remove_metadata().equals(
        pq.read_schema(normal / "saliency.parquet").remove_metadata()
    )
    assert table.dtypes.equals(normal_table.dtypes)
    summary = json.loads((folder / "saliency.json").read_text())
    expected = json.loads((normal / "saliency.json").read_text())
    assert set(summary) == set(expected)
    assert set(summary["metrics"]) == set(expected["metrics"])
    for name in SALIENCY_METRICS:
        assert set(summary["metrics"][name]) == set(expected["metrics"][name])
    assert summary["per_class_dice"] == {}
    assert (summary["dataset"], summary["method"], summary["seed"]) == ("tiny", "baseline", 0)
    arrays = np.load(folder / "saliency_examples.npz")
    reference = np.load(normal / "saliency_examples.npz")
    assert set(arrays.files) == set(reference.files)
    for key in reference.files:
        assert len(arrays[key]) == 0, key
        assert arrays[key].dtype.kind == reference[key].dtype.kind, key
        assert arrays[key].shape[1:] == reference[key].shape[1:], key


def test_nothing_to_score_is_recorded_in_mlflow(unscorable, mlflow_uri: str) -> None:
    import mlflow

    _, _, folder, _ = unscorable
    reason = json.loads((folder / "saliency.json").read_text())["skipped"]
    mlflow.set_tracking_uri(mlflow_uri)
    runs = mlflow.search_runs(
        experiment_names=["sibnet-tiny"],
        filter_string="tags.`sibnet.stage` = 'saliency' and params.skipped != ''",
    )
    assert reason in set(runs["params.skipped"])
    assert (runs["status"] == "FINISHED").all()
