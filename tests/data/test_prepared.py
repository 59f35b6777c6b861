from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from sibnet.data.prepared import PreparedDataset, PreparedError, PreparedWriter
from sibnet.data.tensors import PreparedImages


def _write(root: Path, n: int = 10, shard_size: int = 4, size: tuple[int, int] = (6, 10)) -> dict:
    rng = np.random.default_rng(0)
    data = {
        "images": rng.random((n, 1, *size), dtype=np.float32),
        "labels": np.eye(3, dtype=np.int8)[rng.integers(0, 3, n)],
        "lesion": rng.random((n, 3, *size)) < 0.2,
        "organs": rng.random((n, 2, *size)) < 0.5,
    }
    writer = PreparedWriter(
        root=root,
        name="toy",
        task="multiclass",
        classes=["a", "b", "c"],
        organs=["l", "r"],
        image_size=size,
        shard_size=shard_size,
        lesion_masks=True,
    )
    for start in range(0, n, 3):  # batches that straddle shard boundaries
        stop = min(n, start + 3)
        ids = [f"img{i}" for i in range(start, stop)]
        writer.add(
            images=data["images"][start:stop],
            labels=data["labels"][start:stop],
            ids=ids,
            splits=["train", "val", "test"][: stop - start],
            patient_ids=ids,
            sources=[f"toy:{i}" for i in range(start, stop)],
            lesion_masks=data["lesion"][start:stop],
            organ_masks=data["organs"][start:stop],
        )
    writer.close()
    return data


def test_round_trip(tmp_path: Path) -> None:
    root = tmp_path / "toy"
    data = _write(root)
    dataset = PreparedDataset.open(root)
    assert len(dataset) == 10
    assert len(dataset.meta["shards"]) == 3  # 4 + 4 + 2
    rows = np.arange(10)
    expected = np.rint(data["images"] * 255) / 255
    np.testing.assert_allclose(dataset.images(rows), expected, atol=1e-6)
    np.testing.assert_array_equal(dataset.lesion_masks(rows), data["lesion"])
    np.testing.assert_array_equal(dataset.organ_masks(rows), data["organs"])
    np.testing.assert_array_equal(dataset.labels, data["labels"])
    assert list(dataset.manifest["id"]) == [f"img{i}" for i in range(10)]
    assert dataset.manifest["content_hash"].is_unique
    item = PreparedImages(dataset, "train")[0]
    assert list(item) == ["image", "target"]
    image, target = item["image"], item["target"]
    assert image.shape == (1, 6, 10) and image.dtype == torch.float32
    assert target.shape == (3,) and float(target.sum()) == 1.0


def _broken(tmp_path: Path) -> Path:
    root = tmp_path / "toy"
    _write(root)
    return root


def _rewrite_manifest(root: Path, change) -> None:
    frame = pd.read_parquet(root / "manifest.parquet")
    frame = change(frame)
    frame.to_parquet(root / "manifest.parquet")
    meta = json.loads((root / "dataset.json").read_text())
    from sibnet.files import sha256_file

    meta["manifest_sha256"] = sha256_file(root / "manifest.parquet")
    (root / "dataset.json").write_text(json.dumps(meta))


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda r: (r / "dataset.json").unlink(), "dataset.json: not found"),
        (lambda r: (r / "manifest.parquet").unlink(), "manifest.parquet: not found"),
        (lambda r: (r / "images/shard-00001.npy").unlink(), "shard 1 listed in dataset.json"),
        (
            lambda r: np.save(r / "images/shard-00002.npy", np.zeros((3, 1, 6, 10), np.uint8)),
            "expect uint8\\[2, 1, 6, 10\\]",
        ),
        (
            lambda r: np.save(r / "images/shard-00002.npy", np.ones((2, 1, 6, 10), np.uint8)),
            "content differs from the hash",
        ),
        (lambda r: _rewrite_manifest(r, lambda f: f.iloc[:-1]), "9 rows, but dataset.json"),
        (
            lambda r: _rewrite_manifest(r, lambda f: f.assign(row=f["row"] * 5)),
            "row 1: points at shard 0 row 5",
        ),
        (
            lambda r: _rewrite_manifest(r, lambda f: f.assign(split="holdout")),
            "split 'holdout' is not one of",
        ),
        (
            lambda r: _rewrite_manifest(r, lambda f: f.assign(id="same")),
            "duplicate id 'same'",
        ),
        (
            lambda r: (r / "manifest.parquet").write_bytes(b"garbage"),
            "content differs from the hash",
        ),
    ],
)
def test_disagreements_are_named(tmp_path: Path, damage, message: str) -> None:
    root = _broken(tmp_path)
    damage(root)
    with pytest.raises(PreparedError, match=message):
        PreparedDataset.open(root)


def test_empty_split_is_an_error(tmp_path: Path) -> None:
    root = tmp_path / "toy"
    _write(root, n=2)
    dataset = PreparedDataset.open(root)
    with pytest.raises(PreparedError, match="the test split is empty"):
        PreparedImages(dataset, "test")


def test_prepared_phantom_is_consistent(prepared_tiny: Path, tmp_path: Path) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(prepared_tiny, copy)
    dataset = PreparedDataset.open(copy)
    assert dataset.meta["num_images"] == 96
    assert dataset.classes == ["normal", "nodule", "effusion", "cardiomegaly"]
    assert dataset.organs == ["lung_left", "lung_right", "heart"]
    rows = np.arange(len(dataset))
    lesions = dataset.lesion_masks(rows)
    has_lesion = lesions.reshape(len(rows), len(dataset.classes), -1).any(-1)
    np.testing.assert_array_equal(has_lesion[:, 1:], dataset.labels[:, 1:].astype(bool))
    assert not has_lesion[:, 0].any()  # "normal" has no lesion mask
    assert dataset.organ_masks(rows)[:, :2].any(axis=(2, 3)).all()  # both lungs everywhere
