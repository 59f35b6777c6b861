"""Unlabeled training images in the prepared layout: the ``labeled`` column, withheld labels,
and the sources that make them (phantom ``unlabeled_images``, folder / CheXpert
``unlabeled_fraction``, folder ``unlabeled_csv``)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from sibnet.config import Params, ParamsError, validate_params
from sibnet.data.adapters.phantom import UNLABELED_START
from sibnet.data.phantom_images import phantom_labels
from sibnet.data.prepared import WITHHELD_LABELS, PreparedDataset, PreparedError, PreparedWriter
from sibnet.data.problems import DataError
from sibnet.data.sources import SOURCES, SourceParams
from sibnet.data.splits import unlabeled_groups
from sibnet.files import sha256_file
from sibnet.stages.prepare import prepare
from tests.conftest import untracked, with_changes
from tests.data import test_chexpert, test_folder
from tests.data.chexpert_files import write_chexpert
from tests.data.image_files import radiograph, write_png

CLASSES = ["a", "b", "c"]


# --- the layout -------------------------------------------------------------------------------


def _toy(n: int = 10, unlabeled: tuple[int, ...] = (7, 8, 9), withheld: tuple[int, ...] = (7, 9)):
    """Rows of a multi-class toy dataset: ``unlabeled`` rows in train, labels -1, the true
    labels of ``withheld`` kept apart."""
    rng = np.random.default_rng(0)
    labels = np.eye(3, dtype=np.int8)[rng.integers(0, 3, n)]
    splits = [["train", "val", "test"][i % 3] for i in range(n)]
    stored = labels.copy()
    for i in unlabeled:
        splits[i] = "train"
        stored[i] = -1
    return {
        "images": rng.random((n, 1, 6, 10), dtype=np.float32),
        "labels": stored,
        "ids": [f"img{i}" for i in range(n)],
        "splits": splits,
        "patient_ids": [f"p{i}" for i in range(n)],
        "sources": [f"toy:{i}" for i in range(n)],
        "labeled": [i not in unlabeled for i in range(n)],
        "withheld_labels": [labels[i].tolist() if i in withheld else None for i in range(n)],
        "true": labels,
    }


def _writer(root: Path, shard_size: int = 4, origin: str | None = "test: toy") -> PreparedWriter:
    return PreparedWriter(
        root=root,
        name="toy",
        task="multiclass",
        classes=CLASSES,
        organs=[],
        image_size=(6, 10),
        shard_size=shard_size,
        unlabeled_origin=origin,
    )


def _add(writer: PreparedWriter, rows: dict, start: int, stop: int, *, flags: bool = True) -> None:
    keys = ["images", "labels", "ids", "splits", "patient_ids", "sources"]
    if flags:
        keys += ["labeled", "withheld_labels"]
    writer.add(**{k: rows[k][start:stop] for k in keys})


def _write_toy(root: Path, **toy: object) -> dict:
    rows = _toy(**toy)  # type: ignore[arg-type]
    writer = _writer(root)
    for start in range(0, len(rows["ids"]), 3):  # batches that straddle shard boundaries
        _add(writer, rows, start, start + 3)
    writer.close()
    return rows


def test_unlabeled_rows_round_trip(tmp_path: Path) -> None:
    rows = _write_toy(tmp_path / "toy")
    dataset = PreparedDataset.open(tmp_path / "toy", verify=True)
    assert dataset.labeled.tolist() == rows["labeled"]
    assert not dataset.labeled.flags.writeable
    assert dataset.n_unlabeled == 3
    assert dataset.unlabeled_indices().tolist() == [7, 8, 9]
    assert dataset.withheld_indices().tolist() == [7, 9]
    np.testing.assert_array_equal(dataset.withheld_labels([9, 7]), rows["true"][[9, 7]])
    assert dataset.withheld_labels(np.array([7])).dtype == np.int8
    # indices(): labeled images only; unlabeled ones are all in train
    train = [i for i in range(10) if rows["splits"][i] == "train" and rows["labeled"][i]]
    assert dataset.indices("train").tolist() == train
    assert dataset.indices("val").tolist() == [1, 4]
    assert (dataset.labels[[7, 8, 9]] == -1).all()
    assert dataset.manifest.columns[11] == "labeled"  # right after the documented columns
    assert dataset.meta["unlabeled"] == {
        "images": 3,
        "withheld_labels": 2,
        "origin": "test: toy",
        "withheld_labels_file": {
            "path": WITHHELD_LABELS,
            "sha256": sha256_file(tmp_path / "toy" / WITHHELD_LABELS),
        },
    }
    assert dataset.meta["split_counts"]["train"] == 3 + 3  # unlabeled images count in train
    table = pq.read_table(tmp_path / "toy" / WITHHELD_LABELS)
    assert table.column_names == ["id", "labels"]
    assert table.schema.field("labels").type == pa.list_(pa.int8())
    assert table["id"].to_pylist() == ["img7", "img9"]


def test_appended_parts_carry_flags_and_withheld_labels(tmp_path: Path) -> None:
    """A dataset assembled from finished parts (as ingest does) equals the one written at once."""
    rows = _write_toy(tmp_path / "whole")
    parts = []
    for k, (start, stop) in enumerate([(0, 4), (4, 8), (8, 10)]):
        part = _writer(tmp_path / f"part{k}", shard_size=4)
        _add(part, rows, start, stop)
        part.close()
        parts.append(tmp_path / f"part{k}")
    writer = _writer(tmp_path / "joined")
    for part in parts:
        writer.append(part)
    writer.close()
    for name in ("manifest.parquet", "dataset.json", WITHHELD_LABELS):
        assert (tmp_path / "joined" / name).read_bytes() == (tmp_path / "whole" / name).read_bytes()
    assert not (tmp_path / "part0" / WITHHELD_LABELS).exists()  # part 0: every image labeled
    assert "unlabeled" not in json.loads((tmp_path / "part0" / "dataset.json").read_text())


def test_all_labeled_flags_write_what_no_flags_write(tmp_path: Path) -> None:
    """No unlabeled image: no ``labeled`` column, no ``unlabeled`` key, no withheld file; the
    bytes are those of a writer never told about labels."""
    rows = _toy(unlabeled=(), withheld=())
    for name, flags in (("flags", True), ("plain", False)):
        writer = _writer(tmp_path / name, origin=None)
        _add(writer, rows, 0, 10, flags=flags)
        writer.close()
    for name in ("manifest.parquet", "dataset.json"):
        assert (tmp_path / "flags" / name).read_bytes() == (tmp_path / "plain" / name).read_bytes()
    dataset = PreparedDataset.open(tmp_path / "flags")
    assert "labeled" not in dataset.manifest.columns
    assert "unlabeled" not in dataset.meta
    assert not (tmp_path / "flags" / WITHHELD_LABELS).exists()
    assert dataset.n_unlabeled == 0 and dataset.labeled.all()
    assert len(dataset.unlabeled_indices()) == 0 and len(dataset.withheld_indices()) == 0
    with pytest.raises(
        PreparedError, match=r"flags: this dataset has no withheld labels.*every image is labeled"
    ):
        dataset.withheld_labels([0])


def test_writer_refuses_inconsistent_unlabeled_rows(tmp_path: Path) -> None:
    rows = _toy()
    bad = dict(rows, splits=["val"] * 10)
    with pytest.raises(ValueError, match="'img7': an unlabeled image must be in split 'train'"):
        _add(_writer(tmp_path / "a"), bad, 0, 10)
    bad = dict(rows, labels=rows["true"])
    with pytest.raises(ValueError, match="labels all -1"):
        _add(_writer(tmp_path / "b"), bad, 0, 10)
    bad = dict(rows, withheld_labels=[[0, 1, 0]] * 10)
    with pytest.raises(ValueError, match="'img0': withheld labels given for a labeled image"):
        _add(_writer(tmp_path / "c"), bad, 0, 10)
    writer = _writer(tmp_path / "d", origin=None)
    _add(writer, rows, 0, 10)
    with pytest.raises(ValueError, match="unlabeled images need an origin"):
        writer.close()


def _rewrite(root: Path, change) -> None:
    frame = change(pd.read_parquet(root / "manifest.parquet"))
    frame.to_parquet(root / "manifest.parquet")
    meta = json.loads((root / "dataset.json").read_text())
    meta["manifest_sha256"] = sha256_file(root / "manifest.parquet")
    (root / "dataset.json").write_text(json.dumps(meta))


def _set(frame: pd.DataFrame, row: int, **values: object) -> pd.DataFrame:
    frame = frame.copy()
    for key, value in values.items():
        frame.at[row, key] = value
    return frame


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            lambda f: _set(f, 8, split="val"),
            r"manifest.parquet: row 8 \(id 'img8'\) is unlabeled \(labeled false\) but in split "
            r"'val'; accepted: unlabeled images only in split 'train'",
        ),
        (
            lambda f: _set(f, 9, split="test"),
            r"row 9 \(id 'img9'\) is unlabeled .* in split 'test'",
        ),
        (
            lambda f: _set(f, 8, labels=np.array([0, 1, 0], np.int8)),
            r"row 8 \(id 'img8'\) is unlabeled but has labels \[0, 1, 0\]; accepted: all -1",
        ),
        (
            lambda f: _set(f, 0, labels=np.array([-1, -1, -1], np.int8)),
            r"row 0 \(train\): labels \[-1, -1, -1\]",  # -1 only in unlabeled rows
        ),
        (
            lambda f: f.drop(columns="labeled"),
            "no column 'labeled', but dataset.json records 3 unlabeled images",
        ),
        (
            lambda f: f.assign(labeled=f["labeled"].astype(int)),
            "column 'labeled' is int64; accepted: bool",
        ),
        (
            lambda f: _set(f, 0, labeled=False, labels=np.array([-1, -1, -1], np.int8)),
            "4 unlabeled rows, but dataset.json records 3",
        ),
    ],
)
def test_a_wrong_manifest_is_named(tmp_path: Path, change, message: str) -> None:
    root = tmp_path / "toy"
    _write_toy(root)
    _rewrite(root, change)
    with pytest.raises(PreparedError, match=message):
        PreparedDataset.open(root)


def test_a_hand_made_manifest_with_an_unlabeled_val_row_is_refused(tmp_path: Path) -> None:
    """A manifest written by hand (no writer): ``labeled`` false in val is an error."""
    root = tmp_path / "hand"
    rows = _toy(unlabeled=(), withheld=())
    writer = _writer(root, origin=None)
    _add(writer, rows, 0, 10, flags=False)
    writer.close()

    def unlabel_val(frame: pd.DataFrame) -> pd.DataFrame:
        frame = frame.assign(labeled=frame["split"] != "val")
        frame["labels"] = [
            np.full(3, -1, np.int8) if not flag else labels
            for flag, labels in zip(frame["labeled"], frame["labels"], strict=True)
        ]
        return frame

    _rewrite(root, unlabel_val)
    meta = json.loads((root / "dataset.json").read_text())
    meta["unlabeled"] = {"images": 3, "withheld_labels": 0, "origin": "by hand"}
    (root / "dataset.json").write_text(json.dumps(meta))
    with pytest.raises(PreparedError, match=r"manifest.parquet: row 1 \(id 'img1'\) is unlabeled"):
        PreparedDataset.open(root)


def test_withheld_labels_are_verified_and_checked(tmp_path: Path) -> None:
    root = tmp_path / "toy"
    rows = _write_toy(root)
    path = root / WITHHELD_LABELS
    table = pq.read_table(path)
    tampered = pa.table(
        {"id": table["id"], "labels": pa.array([[1, 0, 0], [1, 0, 0]], pa.list_(pa.int8()))}
    )
    pq.write_table(tampered, path)
    with pytest.raises(PreparedError, match=r"withheld_labels\.parquet: content differs from the"):
        PreparedDataset.open(root, verify=True)
    opened = PreparedDataset.open(root, verify=False)  # the content is still consistent
    assert opened.withheld_labels([7]).tolist() == [[1, 0, 0]]
    # inconsistent content is refused with or without verify
    for ids, message in (
        (["img7", "img3"], "row 1: id 'img3' is a labeled image"),
        (["img9", "img7"], "not in manifest order"),
        (["img7", "nope"], "row 1: id 'nope' is not in the manifest"),
    ):
        labels = pa.array([rows["true"][7].tolist()] * 2, pa.list_(pa.int8()))
        pq.write_table(pa.table({"id": pa.array(ids), "labels": labels}), path)
        with pytest.raises(PreparedError, match=message):
            PreparedDataset.open(root, verify=False)
    path.unlink()
    with pytest.raises(PreparedError, match=r"withheld labels listed in dataset\.json are missing"):
        PreparedDataset.open(root, verify=False)


def test_withheld_labels_of_a_row_without_them_are_an_error(tmp_path: Path) -> None:
    _write_toy(tmp_path / "toy")
    dataset = PreparedDataset.open(tmp_path / "toy")
    with pytest.raises(PreparedError, match=r"row 8 has no withheld labels: .*'img8' came without"):
        dataset.withheld_labels([7, 8])
    with pytest.raises(PreparedError, match=r"row 0 has no withheld labels: .*'img0' is labeled"):
        dataset.withheld_labels([0])
    _write_toy(tmp_path / "bare", withheld=())
    bare = PreparedDataset.open(tmp_path / "bare")
    assert bare.n_unlabeled == 3 and len(bare.withheld_indices()) == 0
    assert "withheld_labels_file" not in bare.meta["unlabeled"]
    with pytest.raises(PreparedError, match="bare: this dataset has no withheld labels"):
        bare.withheld_labels([7])


# --- which images lose their labels -----------------------------------------------------------


def test_unlabeled_groups_by_patient_seeded_and_rounded() -> None:
    groups = np.array([f"p{i // 2}" for i in range(20)])  # 10 patients, 2 images each
    chosen = unlabeled_groups(groups, 0.33, seed=0)
    assert len(set(groups[chosen])) == 3  # round(10 × 0.33)
    assert not set(groups[chosen]) & set(groups[~chosen])  # whole patients
    np.testing.assert_array_equal(chosen, unlabeled_groups(groups, 0.33, seed=0))
    reordered = np.arange(20)[::-1]
    np.testing.assert_array_equal(unlabeled_groups(groups[reordered], 0.33, 0), chosen[reordered])
    seeds = {tuple(unlabeled_groups(groups, 0.33, seed=s)) for s in range(5)}
    assert len(seeds) > 1
    assert not unlabeled_groups(groups, 0.0, 0).any()
    assert len(set(groups[unlabeled_groups(groups, 0.01, 0)])) == 1  # at least one patient
    assert len(set(groups[unlabeled_groups(groups, 0.99, 0)])) == 9  # one stays labeled
    assert not unlabeled_groups(groups[:2], 0.5, 0).any()  # one patient: it stays labeled
    with pytest.raises(ValueError, match=r"fraction must be in \[0, 1\)"):
        unlabeled_groups(groups, 1.0, 0)


# --- the phantom ------------------------------------------------------------------------------


def _phantom(params: Params, **phantom: object) -> Params:
    raw = params.model_dump(mode="json")["prepare"]
    return with_changes(params, prepare={**raw, "phantom": {**raw["phantom"], **phantom}})


def test_phantom_unlabeled_images_leave_the_others_unchanged(
    tiny_params: Params, prepared_tiny: Path, tmp_path: Path
) -> None:
    params = _phantom(untracked(tiny_params), unlabeled_images=30)
    prepare(params, prepared=tmp_path / "u")
    dataset = PreparedDataset.open(tmp_path / "u", verify=True)
    base = PreparedDataset.open(prepared_tiny)
    n = len(base)
    assert len(dataset) == n + 30
    head = dataset.manifest.iloc[:n].reset_index(drop=True)
    for column in ("id", "split", "patient_id", "source", "source_sha256", "content_hash"):
        assert head[column].tolist() == base.manifest[column].tolist(), column
    np.testing.assert_array_equal(dataset.labels[:n], base.labels)
    rows = np.arange(n)
    np.testing.assert_array_equal(dataset.images(rows), base.images(rows))
    np.testing.assert_array_equal(dataset.lesion_masks(rows), base.lesion_masks(rows))
    for split in ("train", "val", "test"):
        np.testing.assert_array_equal(dataset.indices(split), base.indices(split))
    extra = dataset.unlabeled_indices()
    assert extra.tolist() == list(range(n, n + 30))
    tail = dataset.manifest.iloc[n:]
    assert (tail["split"] == "train").all() and not tail["labeled"].any()
    assert tail["id"].iloc[0] == "phantom-unlabeled-0000000"
    assert tail["has_lesion_masks"].all() and tail["has_organ_masks"].all()
    assert (dataset.labels[extra] == -1).all()
    phantom = params.prepare.phantom
    drawn, _ = phantom_labels(
        30, phantom.seed, mode=phantom.mode, findings=phantom.findings, start=UNLABELED_START
    )
    np.testing.assert_array_equal(dataset.withheld_indices(), extra)
    np.testing.assert_array_equal(dataset.withheld_labels(extra), drawn)
    assert dataset.organ_masks(extra).any(axis=(2, 3)).all()  # every organ drawn
    unlabeled = dataset.meta["unlabeled"]
    assert (unlabeled["images"], unlabeled["withheld_labels"]) == (30, 30)
    assert unlabeled["origin"].startswith("prepare.phantom.unlabeled_images")
    counts = dataset.meta["split_counts"]
    assert counts == {**base.meta["split_counts"], "train": base.meta["split_counts"]["train"] + 30}
    assert dataset.meta["source"]["unlabeled_images"] == 30
    # deterministic: the same params, the same bytes
    prepare(params, prepared=tmp_path / "again")
    for name in ("manifest.parquet", "dataset.json", WITHHELD_LABELS):
        assert (tmp_path / "u" / name).read_bytes() == (tmp_path / "again" / name).read_bytes()


def test_a_phantom_without_unlabeled_images_is_as_before(prepared_tiny: Path) -> None:
    dataset = PreparedDataset.open(prepared_tiny)
    assert "labeled" not in dataset.manifest.columns
    assert "unlabeled" not in dataset.meta
    assert "unlabeled_images" not in dataset.meta["source"]
    assert not (prepared_tiny / WITHHELD_LABELS).exists()


# --- the folder source ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("folder")
    test_folder._folder(root)
    return root


def _folder_params(root: Path, **folder: object) -> Params:
    return validate_params(test_folder._params(root, **folder))


def test_folder_unlabeled_fraction_by_patient(folder: Path, tmp_path: Path) -> None:
    base = prepare(_folder_params(folder), prepared=tmp_path / "base")
    params = _folder_params(folder, unlabeled_fraction=0.5)
    dataset = prepare(params, prepared=tmp_path / "half")
    dataset = PreparedDataset.open(tmp_path / "half", verify=True)
    manifest = dataset.manifest
    # the same images, splits and stored bytes; only the labels of some train patients go
    for column in ("id", "split", "patient_id", "content_hash"):
        assert manifest[column].tolist() == base.manifest[column].tolist()
    unlabeled = dataset.unlabeled_indices()
    assert len(unlabeled) and (manifest["split"].to_numpy()[unlabeled] == "train").all()
    patients = set(manifest["patient_id"].iloc[unlabeled])
    train_patients = set(base.manifest.loc[base.manifest["split"] == "train", "patient_id"])
    assert len(patients) == round(len(train_patients) * 0.5)
    assert not patients & set(manifest["patient_id"].iloc[dataset.indices("train")])
    expected = unlabeled_groups(
        base.manifest.loc[base.manifest["split"] == "train", "patient_id"].to_numpy(), 0.5, 0
    )
    assert patients == set(
        base.manifest.loc[base.manifest["split"] == "train", "patient_id"][expected]
    )
    np.testing.assert_array_equal(dataset.withheld_indices(), unlabeled)
    np.testing.assert_array_equal(dataset.withheld_labels(unlabeled), base.labels[unlabeled])
    assert (dataset.labels[unlabeled] == -1).all()
    assert dataset.meta["unlabeled"]["images"] == len(unlabeled)
    assert dataset.meta["unlabeled"]["withheld_labels"] == len(unlabeled)
    assert (
        "unlabeled_fraction 0.5 of train patients (seed 0)" in dataset.meta["unlabeled"]["origin"]
    )
    assert dataset.meta["split_counts"] == base.meta["split_counts"]
    assert dataset.meta["source"]["unlabeled_fraction"] == 0.5
    # another split seed, another draw of the same kind
    reseeded = test_folder._params(folder, unlabeled_fraction=0.5)
    reseeded["prepare"]["split"]["seed"] = 1
    other = prepare(validate_params(reseeded), prepared=tmp_path / "seed1")
    assert (other.manifest["split"].to_numpy()[other.unlabeled_indices()] == "train").all()


def _write_csv(path: Path, rows: list[dict[str, str]]) -> None:
    with path.open("w", newline="", encoding="utf-8") as file:
        writer = csv.DictWriter(file, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def _extra_images(root: Path, n: int = 4, *, patient: str = "u") -> list[dict[str, str]]:
    rows = []
    for i in range(n):
        name = write_png(root / f"extra/{i}.png", radiograph(60, 48, seed=100 + i))
        rows.append({"path": name.relative_to(root).as_posix(), "patient": f"{patient}{i}"})
    return rows


def test_folder_unlabeled_csv_adds_unlabeled_train_images(folder: Path, tmp_path: Path) -> None:
    _write_csv(folder / "unlabeled.csv", _extra_images(folder))
    base = prepare(_folder_params(folder), prepared=tmp_path / "base")
    params = _folder_params(folder, unlabeled_csv="unlabeled.csv")
    assert params.prepare.folder.unlabeled_images() == (True, False)
    prepare(params, prepared=tmp_path / "more")
    dataset = PreparedDataset.open(tmp_path / "more", verify=True)
    n = len(base)
    assert len(dataset) == n + 4
    assert dataset.manifest["id"].iloc[:n].tolist() == base.manifest["id"].tolist()
    assert dataset.manifest["split"].iloc[:n].tolist() == base.manifest["split"].tolist()
    assert dataset.unlabeled_indices().tolist() == list(range(n, n + 4))
    tail = dataset.manifest.iloc[n:]
    assert tail["source"].tolist() == [f"extra/{i}.png" for i in range(4)]
    assert tail["patient_id"].tolist() == [f"u{i}" for i in range(4)]
    assert (tail["split"] == "train").all()
    assert (dataset.labels[n:] == -1).all()
    assert len(dataset.withheld_indices()) == 0
    assert not (tmp_path / "more" / WITHHELD_LABELS).exists()
    assert dataset.meta["unlabeled"] == {
        "images": 4,
        "withheld_labels": 0,
        "origin": "prepare.folder.unlabeled_csv unlabeled.csv: 4 images",
    }
    with pytest.raises(PreparedError, match=r"no withheld labels.*came without labels"):
        dataset.withheld_labels(dataset.unlabeled_indices())
    # both ways together; the fraction applies to the main CSV's train patients only
    both = prepare(
        _folder_params(folder, unlabeled_csv="unlabeled.csv", unlabeled_fraction=0.3),
        prepared=tmp_path / "both",
    )
    assert both.n_unlabeled > 4
    assert both.meta["unlabeled"]["withheld_labels"] == both.n_unlabeled - 4
    assert "; prepare.folder.unlabeled_csv" in both.meta["unlabeled"]["origin"]


def test_folder_unlabeled_params_are_checked(folder: Path, tmp_path: Path) -> None:
    for value, hint in ((1.0, "less than 1"), (-0.1, "greater than or equal to 0"), ("x", "")):
        with pytest.raises(ParamsError, match=rf"prepare.folder.unlabeled_fraction: .*{hint}"):
            _folder_params(folder, unlabeled_fraction=value)
    with pytest.raises(ParamsError, match=r"prepare\.chexpert\.unlabeled_fraction"):
        validate_params({"prepare": {"chexpert": {"unlabeled_fraction": 1.5}}})
    with pytest.raises(ParamsError, match=r"prepare\.phantom\.unlabeled_images"):
        validate_params({"prepare": {"phantom": {"unlabeled_images": -1}}})
    missing = _folder_params(folder, unlabeled_csv="nope.csv")
    with pytest.raises(ParamsError, match=r"prepare.folder.unlabeled_csv: the label table .*nope"):
        prepare(missing, prepared=tmp_path / "x")
    _write_csv(folder / "no_path.csv", [{"file": "extra/0.png", "patient": "u0"}])
    with pytest.raises(
        ParamsError,
        match=r"(?s)no_path\.csv \(prepare\.folder\.unlabeled_csv\) lacks .*"
        r"prepare\.folder\.path_column: 'path'",
    ):
        prepare(_folder_params(folder, unlabeled_csv="no_path.csv"), prepared=tmp_path / "x")
    _write_csv(folder / "no_patient.csv", [{"path": "extra/0.png"}])
    with pytest.raises(ParamsError, match=r"prepare.folder.patient_column: 'patient'"):
        prepare(_folder_params(folder, unlabeled_csv="no_patient.csv"), prepared=tmp_path / "x")
    assert not (tmp_path / "x").exists()


def test_problems_of_unlabeled_csv_rows_name_the_file_and_row(folder: Path, tmp_path: Path) -> None:
    base = prepare(_folder_params(folder), prepared=tmp_path / "base")
    val_patient = base.manifest.loc[base.manifest["split"] == "val", "patient_id"].iloc[0]
    rows = _extra_images(folder, 5, patient="w")
    rows[0]["path"] = "extra/missing.png"
    rows[1]["path"] = base.manifest["source"].iloc[0]  # already in labels.csv
    rows[2]["patient"] = val_patient
    rows[4]["path"] = rows[3]["path"]  # repeated within the file
    _write_csv(folder / "bad_unlabeled.csv", rows)
    params = _folder_params(folder, unlabeled_csv=str(folder / "bad_unlabeled.csv"))  # absolute
    with pytest.raises(DataError) as caught:
        prepare(params, prepared=tmp_path / "x")
    reasons = {p.row: p.reason for p in caught.value.problems}
    assert {p.file for p in caught.value.problems} == {"bad_unlabeled.csv"}
    assert "extra/missing.png not found" in reasons[1]
    assert "duplicate image path" in reasons[2] and "labels.csv row 1" in reasons[2]
    assert f"patient {val_patient!r} is in split 'val'" in reasons[3]
    assert "duplicate image path" in reasons[5] and "bad_unlabeled.csv row 4" in reasons[5]
    assert sorted(reasons) == [1, 2, 3, 5]
    kept = prepare(params, prepared=tmp_path / "kept", skip_invalid=True)
    assert kept.n_unlabeled == 1


# --- CheXpert ---------------------------------------------------------------------------------


def test_chexpert_unlabeled_fraction(tmp_path: Path) -> None:
    fixture = write_chexpert(tmp_path / "raw", n_train=24, n_valid=6, size=48, masks=False)
    base = prepare(test_chexpert._params(fixture, uncertainty="ignore"), prepared=tmp_path / "b")
    params = test_chexpert._params(fixture, uncertainty="ignore", unlabeled_fraction=0.4)
    assert params.prepare.chexpert.unlabeled_images() == (True, True)
    prepare(params, prepared=tmp_path / "u")
    dataset = PreparedDataset.open(tmp_path / "u", verify=True)
    assert dataset.manifest["split"].tolist() == base.manifest["split"].tolist()
    unlabeled = dataset.unlabeled_indices()
    assert len(unlabeled) and (dataset.manifest["split"].to_numpy()[unlabeled] == "train").all()
    train = base.manifest.loc[base.manifest["split"] == "train", "patient_id"]
    patients = set(dataset.manifest["patient_id"].iloc[unlabeled])
    assert len(patients) == round(train.nunique() * 0.4)
    np.testing.assert_array_equal(dataset.withheld_labels(unlabeled), base.labels[unlabeled])
    assert "prepare.chexpert.unlabeled_fraction 0.4" in dataset.meta["unlabeled"]["origin"]


# --- what the params say before any work ------------------------------------------------------


def test_each_source_says_whether_it_yields_unlabeled_images(tmp_path: Path) -> None:
    defaults = validate_params({}).prepare
    for name in SOURCES.names():
        assert defaults.section(name).unlabeled_images() == (False, False), name
    assert SourceParams().unlabeled_images() == (False, False)
    phantom = validate_params({"prepare": {"phantom": {"unlabeled_images": 5}}}).prepare
    assert phantom.section().unlabeled_images() == (True, True)
    assert phantom.phantom.n_unlabeled == 5
    chexpert = validate_params({"prepare": {"chexpert": {"unlabeled_fraction": 0.2}}}).prepare
    assert chexpert.section("chexpert").unlabeled_images() == (True, True)
    for folder, expected in (
        ({"unlabeled_fraction": 0.2}, (True, True)),
        ({"unlabeled_csv": "u.csv"}, (True, False)),
        ({"unlabeled_fraction": 0.2, "unlabeled_csv": "u.csv"}, (True, False)),
    ):
        section = validate_params({"prepare": {"folder": folder}}).prepare.section("folder")
        assert section.unlabeled_images() == expected, folder
    assert validate_params({}).prepare.section("medmnist").unlabeled_images() == (False, False)


def test_the_new_keys_dump_only_when_set() -> None:
    """Params without unlabeled images dump (and so hash) as before the keys existed."""
    dumped = validate_params({}).model_dump(mode="json")["prepare"]
    assert "unlabeled_images" not in dumped["phantom"]
    assert "unlabeled_fraction" not in dumped["chexpert"]
    assert not {"unlabeled_fraction", "unlabeled_csv"} & set(dumped["folder"])
    raw = {
        "prepare": {
            "phantom": {"unlabeled_images": 3},
            "chexpert": {"unlabeled_fraction": 0.1},
            "folder": {"unlabeled_fraction": 0.2, "unlabeled_csv": "u.csv"},
        }
    }
    params = validate_params(raw)
    dumped = params.model_dump(mode="json")
    assert dumped["prepare"]["phantom"]["unlabeled_images"] == 3
    assert dumped["prepare"]["folder"]["unlabeled_csv"] == "u.csv"
    assert validate_params(dumped) == params
    with pytest.raises(ParamsError, match=r"prepare\.phantom\.n_unlabeled: unknown key"):
        validate_params({"prepare": {"phantom": {"n_unlabeled": 3}}})


def test_a_fraction_far_from_what_whole_patients_allow_is_warned(
    caplog: pytest.LogCaptureFixture,
) -> None:
    groups = np.array(["a", "a", "b", "c"])
    with caplog.at_level("WARNING", "sibnet.data.splits"):
        unlabeled_groups(groups, 0.33, seed=0)  # 1 of 3 patients: 33%, close enough
        assert not caplog.records
        unlabeled_groups(groups, 0.01, seed=0)
        assert "1 of the 3 train patients are made unlabeled (33%)" in caplog.text
        caplog.clear()
        unlabeled_groups(groups[:2], 0.5, seed=0)
        assert "has 1 patient(s)" in caplog.text and "no image is made unlabeled" in caplog.text


def test_an_unlabeled_csv_named_like_the_labels_csv_is_refused(
    folder: Path, tmp_path: Path
) -> None:
    from sibnet.config import ParamsError

    (folder / "more").mkdir(exist_ok=True)
    _write_csv(folder / "more" / "labels.csv", _extra_images(folder))
    params = _folder_params(folder, unlabeled_csv="more/labels.csv")
    with pytest.raises(ParamsError, match=r"prepare.folder.unlabeled_csv .* has the file name of"):
        prepare(params, prepared=tmp_path / "out")
    assert not (tmp_path / "out").exists()
