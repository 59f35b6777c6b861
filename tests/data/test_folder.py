"""The folder adapter: a CSV plus PNG (8/16-bit), JPEG and DICOM images and mask folders."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from sibnet.config import ParamsError, validate_params
from sibnet.data.images import fit_image, fit_mask, read_image, to_uint8
from sibnet.data.ingest import work_folder
from sibnet.data.prepared import PreparedDataset
from sibnet.data.problems import DataError
from sibnet.stages.prepare import prepare
from tests.data.image_files import (
    corrupt,
    radiograph,
    write_dicom,
    write_jpeg,
    write_mask_png,
    write_png,
)

SENTINEL = "SENTINEL-NAME-5d1e"
CLASSES = ["effusion", "nodule"]


def _write_csv(path: Path, rows: list[dict[str, str]]) -> None:
    with path.open("w", newline="", encoding="utf-8") as file:
        writer = csv.DictWriter(file, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def _folder(root: Path, n: int = 24) -> list[dict[str, str]]:
    """``n`` images in four formats, 2 per patient, with lesion and organ masks on some."""
    rows = []
    for i in range(n):
        image = radiograph(60, 48, seed=i)
        kind = ["png8", "png16", "jpeg", "dicom"][i % 4]
        if kind == "png8":
            name = write_png(root / f"img/{i:03d}.png", image)
        elif kind == "png16":
            name = write_png(root / f"img/{i:03d}.png", image, bits=16)
        elif kind == "jpeg":
            name = write_jpeg(root / f"img/{i:03d}.jpg", image)
        else:
            pixels = np.rint(image * 4000).astype(np.uint16)
            name = write_dicom(root / f"img/{i:03d}.dcm", pixels, window=(2000, 4000))
        source = name.relative_to(root).as_posix()
        if i % 3 == 0:
            stem = Path(source).with_suffix("")
            write_mask_png(root / "lesions" / stem / "effusion.png", image > 0.6)
            write_mask_png(root / "organs" / stem / "lung.png", image < 0.4)
        rows.append(
            {
                "path": source,
                "effusion": str(i % 2),
                "nodule": "1.0" if i % 5 == 0 else "0.0",
                "patient": f"p{i // 2}",
                "Name": SENTINEL,
                "Notes": f"{SENTINEL} free text",
                "StudyDate": "20240101",
            }
        )
    _write_csv(root / "labels.csv", rows)
    return rows


def _params(root: Path, **folder: object) -> dict:
    return {
        "prepare": {
            "dataset": "mine",
            "source": "folder",
            "size": 32,
            "resize": "pad",
            "workers": 1,
            "shard_size": 8,
            "split": {"val": 0.25, "test": 0.25, "seed": 0},
            "folder": {
                "root": str(root),
                "classes": CLASSES,
                "patient_column": "patient",
                "lesion_masks": str(root / "lesions"),
                "organ_masks": str(root / "organs"),
                "organs": ["lung"],
                **folder,
            },
        },
        "segment": {"structures": ["lung"]},
        "tracking": {"enabled": False},
    }


@pytest.fixture(scope="module")
def raw(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict[str, str]]]:
    root = tmp_path_factory.mktemp("folder")
    return root, _folder(root)


def test_every_format_is_decoded_resized_and_masked(
    raw: tuple[Path, list[dict[str, str]]], tmp_path: Path
) -> None:
    root, rows = raw
    out = tmp_path / "mine"
    prepare(validate_params(_params(root)), prepared=out)
    dataset = PreparedDataset.open(out)
    assert len(dataset) == len(rows)
    assert dataset.organs == ["lung"]
    manifest = dataset.manifest
    for row, entry in enumerate(rows):
        assert manifest["source"].iloc[row] == entry["path"]
        expected = to_uint8(fit_image(read_image(root / entry["path"])[0], (32, 32), "pad"))
        np.testing.assert_array_equal(to_uint8(dataset.images(np.array([row]))[0, 0]), expected)
    annotated = manifest["has_organ_masks"].to_numpy()
    assert annotated.sum() == len(rows[::3])
    first = int(np.flatnonzero(annotated)[0])
    stem = Path(rows[first]["path"]).with_suffix("")
    from sibnet.data.images import read_mask

    expected_mask = fit_mask(read_mask(root / "organs" / stem / "lung.png")[0], (32, 32), "pad")
    np.testing.assert_array_equal(dataset.organ_masks(np.array([first]))[0, 0], expected_mask)
    assert not dataset.lesion_masks(np.array([first]))[0, 1].any()  # no nodule file: empty
    assert dataset.labels[:, 1].tolist() == [int(e["nodule"] == "1.0") for e in rows]
    assert (manifest.groupby("patient_id")["split"].nunique() == 1).all()
    assert set(manifest["split"]) == {"train", "val", "test"}
    for path in out.rglob("*"):
        if path.is_file():
            assert SENTINEL.encode() not in path.read_bytes()
            assert b"20240101" not in path.read_bytes()


def test_dicom_window_and_16_bit_png_use_their_full_range(
    raw: tuple[Path, list[dict[str, str]]],
) -> None:
    root, rows = raw
    dicom = read_image(root / rows[3]["path"])[0]
    png16 = read_image(root / rows[1]["path"])[0]
    reference = radiograph(60, 48, seed=3)
    assert np.abs(dicom - reference).max() < 0.01  # window 2000/4000 over 0..4000: ≈ identity
    assert np.abs(png16 - radiograph(60, 48, seed=1)).max() < 1e-4


def test_multiclass_labels_and_a_split_column(tmp_path: Path) -> None:
    rows = []
    for i in range(12):
        write_png(tmp_path / f"{i}.png", radiograph(40, 40, seed=i))
        rows.append(
            {
                "file": f"{i}.png",
                "diagnosis": ["normal", "effusion", "nodule"][i % 3],
                "set": ["train", "train", "val", "test"][i % 4],
            }
        )
    _write_csv(tmp_path / "table.csv", rows)
    params = {
        "prepare": {
            "dataset": "mc",
            "source": "folder",
            "size": 16,
            "workers": 1,
            "folder": {
                "root": str(tmp_path),
                "csv": "table.csv",
                "path_column": "file",
                "task": "multiclass",
                "label_column": "diagnosis",
                "classes": ["normal", "effusion", "nodule"],
                "split_column": "set",
            },
        },
        "segment": {"structures": []},
        "tracking": {"enabled": False},
    }
    prepare(validate_params(params), prepared=tmp_path / "mc")
    dataset = PreparedDataset.open(tmp_path / "mc")
    assert dataset.task == "multiclass"
    assert dataset.manifest["split"].tolist() == [r["set"] for r in rows]
    assert dataset.labels.argmax(1).tolist() == [i % 3 for i in range(12)]
    assert dataset.manifest["patient_id"].tolist() == [r["file"] for r in rows]


def test_problems_of_the_folder_source(raw: tuple[Path, list[dict[str, str]]], tmp_path: Path):
    root, rows = raw
    rows = [dict(r) for r in rows]
    rows[0]["effusion"] = "yes"
    rows[1]["path"] = "img/missing.png"
    rows[2]["path"] = "img/../../etc/passwd"
    rows[4]["path"] = rows[5]["path"]
    stem = Path(rows[6]["path"]).with_suffix("")
    write_mask_png(root / "lesions" / stem / "typo.png", np.ones((60, 48), bool))
    stem = Path(rows[9]["path"]).with_suffix("")
    write_mask_png(root / "lesions" / stem / "effusion.png", np.ones((60, 47), bool))
    (root / "organs" / Path(rows[12]["path"]).with_suffix("") / "lung.png").unlink()
    _write_csv(root / "bad.csv", rows)
    try:
        with pytest.raises(DataError) as caught:
            prepare(validate_params(_params(root, csv="bad.csv")), prepared=tmp_path / "x")
    finally:
        (root / "lesions" / Path(rows[6]["path"]).with_suffix("") / "typo.png").unlink()
        (root / "lesions" / Path(rows[9]["path"]).with_suffix("") / "effusion.png").unlink()
        write_mask_png(
            root / "organs" / Path(rows[12]["path"]).with_suffix("") / "lung.png",
            radiograph(60, 48, seed=12) < 0.4,
        )
    found = {(p.row, p.reason.split(":")[0].split(" ")[0]) for p in caught.value.problems}
    reasons = {p.row: p.reason for p in caught.value.problems}
    assert "unknown label value 'yes'" in reasons[1]
    assert "not found" in reasons[2]
    assert "escapes the data root" in reasons[3]
    assert "duplicate image path" in reasons[6]
    assert "typo.png" in reasons[7]
    assert "is 60×47, but its image is 60×48" in reasons[10]
    assert "organ mask(s) ['lung'] missing" in reasons[13]
    assert len(found) == 7
    assert all(p.file == "bad.csv" for p in caught.value.problems)
    assert not (tmp_path / "x").exists()


def test_configuration_errors_name_the_key(tmp_path: Path) -> None:
    with pytest.raises(ParamsError, match=r"prepare.folder.root, prepare.folder.classes"):
        validate_params({"prepare": {"source": "folder"}, "segment": {"structures": []}})
    raw = _params(tmp_path)
    raw["segment"] = {"structures": ["heart"]}
    with pytest.raises(ParamsError, match=r"provides organ masks \['lung'\]"):
        validate_params(raw)
    raw = _params(tmp_path)
    del raw["prepare"]["folder"]["organ_masks"]
    with pytest.raises(ParamsError, match="organs and organ_masks go together"):
        validate_params(raw)


def test_what_the_params_name_must_exist(
    raw: tuple[Path, list[dict[str, str]]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A root, mask folder, CSV or column the params name but that is not there is a
    configuration error naming the key, raised before an MLflow run is opened."""
    import mlflow

    root, _ = raw
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store)
    cases = {
        "root": ({"root": str(tmp_path / "nowhere")}, r"^prepare.folder.root = .*: folder not"),
        "lesions": (
            {"lesion_masks": str(tmp_path / "none")},
            r"^prepare.folder.lesion_masks = .*: folder not found",
        ),
        "csv": ({"csv": "nope.csv"}, r"^prepare.folder.csv: the label table .*nope.csv not found"),
        "classes": (
            {"classes": ["effusion", "nodules"]},
            r"prepare.folder.classes: 'nodules'",
        ),
        "patient": (
            {"patient_column": "patient_id"},
            "prepare.folder.patient_column: 'patient_id'",
        ),
        "path": ({"path_column": "file"}, "prepare.folder.path_column: 'file'"),
        "split": ({"split_column": "set"}, "prepare.folder.split_column: 'set'"),
        "label": (
            {"task": "multiclass", "classes": ["a", "b"], "label_column": "diagnosis"},
            "prepare.folder.label_column: 'diagnosis'",
        ),
        "mask column": (
            {"lesion_masks": None, "lesion_mask_columns": {"nodule": "nodule_mask"}},
            "prepare.folder.lesion_mask_columns.nodule: 'nodule_mask'",
        ),
    }
    for name, (folder, match) in cases.items():
        params = _params(root)
        params["prepare"]["folder"] |= folder
        params["tracking"] = {"enabled": True, "experiment": "misconfigured"}
        with pytest.raises(ParamsError, match=match) as caught:
            prepare(validate_params(params), prepared=tmp_path / "x")
        message = str(caught.value)
        assert "configuration error" in message, name
        assert "--skip-invalid" not in message and "skip_invalid" not in message, name
        assert not (tmp_path / "x").exists()
    assert "its columns are ['path', 'effusion', 'nodule', 'patient', 'Name'" in message
    assert mlflow.MlflowClient(store).get_experiment_by_name("misconfigured") is None


def test_unknown_columns_are_not_read(raw: tuple[Path, list[dict[str, str]]]) -> None:
    from sibnet.data.adapters.folder import plan_folder

    root, _ = raw
    plan = plan_folder(validate_params(_params(root)).prepare)
    assert not plan.problems
    text = repr(plan)
    assert SENTINEL not in text
    frame = pd.read_csv(root / "labels.csv")
    assert "Name" in frame.columns  # it is there; the plan simply never loaded it


def _with_mask_columns(root: Path, rows: list[dict[str, str]], name: str) -> None:
    """Write ``name``: ``rows`` plus mask-path columns naming the files of the mask folders."""
    table = []
    for row in rows:
        stem = Path(row["path"]).with_suffix("")
        cells = {}
        for column, file in (
            ("effusion_mask", Path("lesions") / stem / "effusion.png"),
            ("nodule_mask", Path("lesions") / stem / "nodule.png"),
            ("lung_mask", Path("organs") / stem / "lung.png"),
        ):
            cells[column] = file.as_posix() if (root / file).is_file() else ""
        table.append({**row, **cells})
    _write_csv(root / name, table)


def _column_params(root: Path, **folder: object) -> dict:
    columns = {
        "csv": "masks.csv",
        "lesion_masks": None,
        "organ_masks": None,
        "lesion_mask_columns": {"effusion": "effusion_mask", "nodule": "nodule_mask"},
        "organ_mask_columns": {"lung": "lung_mask"},
    }
    return _params(root, **(columns | folder))


def test_mask_paths_in_columns_equal_mask_folders(tmp_path: Path) -> None:
    root = tmp_path / "raw"
    rows = _folder(root)
    _with_mask_columns(root, rows, "masks.csv")
    prepare(validate_params(_params(root)), prepared=tmp_path / "folders")
    prepare(validate_params(_column_params(root)), prepared=tmp_path / "columns")
    folders = PreparedDataset.open(tmp_path / "folders")
    columns = PreparedDataset.open(tmp_path / "columns")
    everything = np.arange(len(rows))
    annotated = [i % 3 == 0 for i in range(len(rows))]
    for dataset in (folders, columns):
        assert dataset.manifest["has_lesion_masks"].tolist() == annotated
        assert dataset.manifest["has_organ_masks"].tolist() == annotated
    for column in ("id", "split", "patient_id", "source", "source_sha256", "content_hash"):
        if column != "content_hash":
            assert folders.manifest[column].tolist() == columns.manifest[column].tolist(), column
    np.testing.assert_array_equal(folders.images(everything), columns.images(everything))
    np.testing.assert_array_equal(folders.labels, columns.labels)
    lesions = columns.lesion_masks(everything)
    np.testing.assert_array_equal(folders.lesion_masks(everything), lesions)
    np.testing.assert_array_equal(folders.organ_masks(everything), columns.organ_masks(everything))
    assert lesions[np.array(annotated), 0].any()  # the effusion files were read
    assert not lesions[:, 1].any()  # every nodule cell is empty: empty masks
    assert not lesions[~np.array(annotated)].any()  # rows with no mask cell: not annotated


def test_a_missing_mask_file_named_in_the_csv_is_a_problem_of_its_row(tmp_path: Path) -> None:
    root = tmp_path / "raw"
    rows = _folder(root)
    rows = [dict(r) for r in rows]
    _with_mask_columns(root, rows, "masks.csv")
    table = pd.read_csv(root / "masks.csv", dtype=str, keep_default_na=False)
    table.loc[3, "effusion_mask"] = "lesions/img/gone/effusion.png"  # row 4
    table.loc[7, "lung_mask"] = "/abs/lung.png"  # row 8
    table.loc[10, "lung_mask"] = "../outside/lung.png"  # row 11
    table.to_csv(root / "masks.csv", index=False)
    with pytest.raises(DataError) as caught:
        prepare(validate_params(_column_params(root)), prepared=tmp_path / "x")
    assert [(p.file, p.row) for p in caught.value.problems] == [
        ("masks.csv", 4),
        ("masks.csv", 8),
        ("masks.csv", 11),
    ]
    reasons = [p.reason for p in caught.value.problems]
    assert reasons[0] == (
        "column 'effusion_mask': mask file lesions/img/gone/effusion.png not found under the "
        "data root"
    )
    assert "column 'lung_mask': mask path '/abs/lung.png' is absolute" in reasons[1]
    assert "column 'lung_mask': mask path '../outside/lung.png' escapes the data root" in reasons[2]
    assert "masks.csv, row 4: column 'effusion_mask'" in str(caught.value)
    assert "--skip-invalid" in str(caught.value)  # a row problem: skipping helps
    dataset = prepare(
        validate_params(_column_params(root)), prepared=tmp_path / "x", skip_invalid=True
    )
    assert len(dataset) == len(rows) - 3
    assert pd.read_csv(tmp_path / "x" / "rejects.csv")["row"].tolist() == [4, 8, 11]


def test_mask_folders_and_mask_columns_exclude_each_other(tmp_path: Path) -> None:
    raw = _column_params(tmp_path, lesion_masks=str(tmp_path))
    with pytest.raises(ParamsError, match=r"prepare.folder: lesion_masks \(a mask folder\) and "):
        validate_params(raw)
    raw = _column_params(tmp_path, organ_masks=str(tmp_path))
    with pytest.raises(ParamsError, match=r"organ_masks .* and organ_mask_columns .* set one"):
        validate_params(raw)
    raw = _column_params(tmp_path)
    raw["prepare"]["folder"]["lesion_mask_columns"] = {"effusion": "e", "typo": "t"}
    with pytest.raises(ParamsError, match=r"lesion_mask_columns names \['typo'\], which are not"):
        validate_params(raw)
    raw = _column_params(tmp_path, organs=["lung", "heart"])
    with pytest.raises(ParamsError, match=r"organ_mask_columns must map every organ.*\['heart'\]"):
        validate_params(raw)
    raw = _column_params(tmp_path)
    raw["prepare"]["folder"]["lesion_mask_columns"] = {"effusion": ""}
    with pytest.raises(
        ParamsError, match=r"prepare\.folder\.lesion_mask_columns\.effusion: String"
    ):
        validate_params(raw)
    assert validate_params(_column_params(tmp_path)).prepare.folder.organ_masks is None


def _rows(root: Path, patients: list[str], labels: list[str]) -> None:
    rows = []
    for i, (patient, label) in enumerate(zip(patients, labels, strict=True)):
        write_png(root / f"{i}.png", radiograph(20, 20, seed=i))
        rows.append({"path": f"{i}.png", "effusion": label, "nodule": "0", "patient": patient})
    _write_csv(root / "labels.csv", rows)


def _small(root: Path, **folder: object) -> dict:
    raw = _params(root, lesion_masks=None, organ_masks=None, organs=[], **folder)
    raw["segment"] = {"structures": []}
    raw["prepare"]["split"] = {"val": 0.15, "test": 0.15, "seed": 0}
    return raw


def test_six_patients_fill_every_split(tmp_path: Path) -> None:
    _rows(tmp_path, [f"p{i}" for i in range(6)], ["1", "1", "1", "0", "0", "0"])
    dataset = prepare(validate_params(_small(tmp_path)), prepared=tmp_path / "small")
    assert sorted(dataset.meta["split_counts"].items()) == [("test", 1), ("train", 4), ("val", 1)]


def test_too_few_patients_say_what_would_help(tmp_path: Path) -> None:
    _rows(tmp_path, ["a", "a", "b", "b"], ["1", "0", "1", "0"])
    for skip in (False, True):
        with pytest.raises(DataError) as caught:
            prepare(validate_params(_small(tmp_path)), prepared=tmp_path / "x", skip_invalid=skip)
        message = str(caught.value)
        assert "labels.csv: 2 patient(s) cannot fill train, val and test" in message
        assert "add patients, or give every row its split in a column" in message
        assert "prepare.folder.split_column" in message
        assert "--skip-invalid" not in message and "skip_invalid" not in message
        assert not (tmp_path / "x").exists()
    rows = pd.read_csv(tmp_path / "labels.csv", dtype=str)
    rows["set"] = ["train", "train", "val", "val"]
    rows.to_csv(tmp_path / "labels.csv", index=False)
    with pytest.raises(DataError) as caught:
        prepare(validate_params(_small(tmp_path, split_column="set")), prepared=tmp_path / "x")
    message = str(caught.value)
    assert "the test split is empty: no row has 'test' in column 'set'" in message
    assert "--skip-invalid" not in message


def test_problems_are_listed_in_row_order(tmp_path: Path) -> None:
    _rows(tmp_path, [f"p{i}" for i in range(12)], ["1", "0"] * 6)
    rows = pd.read_csv(tmp_path / "labels.csv", dtype=str)
    rows.loc[4, "effusion"] = "maybe"  # row 5: found reading the table
    rows.loc[3, "path"] = rows.loc[0, "path"]  # row 4: found comparing the paths
    corrupt(tmp_path / rows.loc[1, "path"])  # row 2: found decoding the image
    rows.to_csv(tmp_path / "labels.csv", index=False)
    params = validate_params(_small(tmp_path))
    out = tmp_path / "out"
    with pytest.raises(DataError) as caught:
        prepare(params, prepared=out)
    assert [p.row for p in caught.value.problems] == [2, 4, 5]
    message = str(caught.value)
    assert message.index("row 2:") < message.index("row 4:") < message.index("row 5:")
    report = pd.read_csv(work_folder(out) / "problems.csv")
    assert report["row"].tolist() == [2, 4, 5]
    prepare(params, prepared=out, skip_invalid=True)
    rejects = pd.read_csv(out / "rejects.csv")
    assert rejects["row"].tolist() == [2, 4, 5]
    assert "unknown label value 'maybe'" in rejects["reason"].iloc[2]
