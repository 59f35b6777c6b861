"""The folder adapter: a CSV plus PNG (8/16-bit), JPEG and DICOM images and mask folders."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from sibnet.config import ParamsError, validate_params
from sibnet.data.images import fit_image, fit_mask, read_image, to_uint8
from sibnet.data.prepared import PreparedDataset
from sibnet.data.problems import DataError
from sibnet.stages.prepare import prepare
from tests.data.image_files import (
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


def test_unknown_columns_are_not_read(raw: tuple[Path, list[dict[str, str]]]) -> None:
    from sibnet.data.adapters.folder import plan_folder

    root, _ = raw
    plan = plan_folder(validate_params(_params(root)).prepare)
    assert not plan.problems
    text = repr(plan)
    assert SENTINEL not in text
    frame = pd.read_csv(root / "labels.csv")
    assert "Name" in frame.columns  # it is there; the plan simply never loaded it
