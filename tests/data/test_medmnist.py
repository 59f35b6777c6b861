"""Tests of the MedMNIST adapter: real-format ``.npz`` fixtures → the prepared layout."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import tracemalloc
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sibnet.config import ParamsError, PrepareParams, validate_params
from sibnet.data.adapters import medmnist
from sibnet.data.adapters.medmnist import plan_medmnist
from sibnet.data.images import fit_image, to_uint8
from sibnet.data.ingest import ingest
from sibnet.data.prepared import PreparedDataset
from sibnet.data.problems import DataError, Problem

SPLITS = ("train", "val", "test")
COUNTS = {"train": 7, "val": 3, "test": 4}


# --------------------------------------------------------------------------- fixtures


def make_arrays(
    *,
    counts: dict[str, int] = COUNTS,
    shape: tuple[int, ...] = (28, 28),
    columns: int = 1,
    classes: int = 3,
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """MedMNIST-like arrays: ``<split>_images`` uint8 ``(N, *shape)``, ``<split>_labels``.

    Labels are ``(N, 1)`` class indices ``0..classes-1`` (each split cycles through them) when
    ``columns == 1``, else ``(N, columns)`` random 0/1 (multi-label), uint8 like MedMNIST's.
    """
    rng = np.random.default_rng(seed)
    arrays: dict[str, np.ndarray] = {}
    for split, n in counts.items():
        arrays[f"{split}_images"] = rng.integers(0, 256, (n, *shape), dtype=np.uint8)
        if columns == 1:
            labels = (np.arange(n) % classes).reshape(n, 1)
        else:
            labels = rng.integers(0, 2, (n, columns))
        arrays[f"{split}_labels"] = labels.astype(np.uint8)
    return arrays


def save_npz(path: Path, arrays: dict[str, np.ndarray], *, compressed: bool = True) -> Path:
    """Save like MedMNIST does (``np.savez_compressed``, or plain ``np.savez``)."""
    (np.savez_compressed if compressed else np.savez)(path, **arrays)
    return path


def npy_bytes(array: np.ndarray) -> bytes:
    """The bytes of ``array`` as a ``.npy`` file."""
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def prepare_params(path: Path, size: int = 32, resize: str = "pad", **medmnist) -> PrepareParams:
    """A validated ``prepare`` section for the MedMNIST file ``path``."""
    raw = {
        "prepare": {
            "source": "medmnist",
            "dataset": "chest",
            "size": size,
            "resize": resize,
            "shard_size": 4,
            "medmnist": {"path": str(path), **medmnist},
        },
        "segment": {"structures": []},
    }
    return validate_params(raw).prepare


def write_medmnist(params: PrepareParams, root: Path, *, skip_invalid: bool) -> list[Problem]:
    """Prepare the MedMNIST file of ``params`` into ``root`` the one way every source goes
    (the adapter's plan, then ingest); return the row problems left out."""
    plan = plan_medmnist(params)
    ingest(plan, root, shard_size=params.shard_size, workers=1, skip_invalid=skip_invalid)
    return plan.problems


def run(
    params: PrepareParams, root: Path, *, skip_invalid: bool = False
) -> tuple[PreparedDataset, list[Problem]]:
    """Write and open (verifying hashes) the prepared dataset."""
    root.mkdir(parents=True, exist_ok=True)
    skipped = write_medmnist(params, root, skip_invalid=skip_invalid)
    return PreparedDataset.open(root, verify=True), skipped


def failure(params: PrepareParams, root: Path, *, skip_invalid: bool = False) -> list[Problem]:
    """The problems of a run that must fail, having written nothing."""
    root.mkdir(parents=True, exist_ok=True)
    with pytest.raises(DataError) as caught:
        write_medmnist(params, root, skip_invalid=skip_invalid)
    assert list(root.iterdir()) == [], "nothing may be written before the problems are known"
    assert caught.value.problems
    return caught.value.problems


def hashes(root: Path) -> dict[str, str]:
    """SHA-256 of every file under ``root``, by relative path."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


# --------------------------------------------------------------------------- good inputs


def test_multiclass_rgb_luma_and_one_hot(tmp_path: Path) -> None:
    arrays = make_arrays(shape=(28, 28, 3), classes=9, counts={"train": 10, "val": 3, "test": 4})
    arrays["train_images"][0, 5, 7] = (200, 100, 50)
    path = save_npz(tmp_path / "pathmnist.npz", arrays)
    dataset, skipped = run(prepare_params(path, size=28), tmp_path / "out")

    assert skipped == []
    assert dataset.task == "multiclass"
    assert dataset.classes == [f"class_{i}" for i in range(9)]
    # 200·0.299 + 100·0.587 + 50·0.114 = 124.2 → 124, as Pillow's "L" conversion gives
    stored = dataset.images(dataset.indices("train")[:1])[0, 0]
    pillow = np.asarray(Image.fromarray(arrays["train_images"][0]).convert("L"))
    assert round(float(stored[5, 7]) * 255) == 124 == pillow[5, 7]
    rgb = arrays["train_images"][0].astype(np.float64)
    luma = (rgb @ np.array([0.299, 0.587, 0.114])) / 255
    np.testing.assert_allclose(stored, luma, atol=0.5 / 255 + 1e-6)
    for split in SPLITS:
        rows = dataset.indices(split)
        labels = dataset.labels[rows]
        assert (labels.sum(axis=1) == 1).all()
        np.testing.assert_array_equal(labels.argmax(axis=1), arrays[f"{split}_labels"][:, 0])


def test_binary_becomes_two_class_multiclass(tmp_path: Path) -> None:
    arrays = make_arrays(classes=2)
    path = save_npz(tmp_path / "pneumoniamnist.npz", arrays)
    dataset, _ = run(prepare_params(path), tmp_path / "out")
    assert dataset.task == "multiclass"
    assert dataset.classes == ["class_0", "class_1"]
    train = dataset.labels[dataset.indices("train")]
    expected = np.eye(2, dtype=np.int8)[arrays["train_labels"][:, 0]]
    np.testing.assert_array_equal(train, expected)


def test_single_value_labels_still_give_two_classes(tmp_path: Path) -> None:
    arrays = make_arrays(classes=1)  # every label 0
    dataset, _ = run(prepare_params(save_npz(tmp_path / "b.npz", arrays)), tmp_path / "out")
    assert dataset.classes == ["class_0", "class_1"]
    assert (dataset.labels[:, 0] == 1).all()


def test_multilabel_chestmnist(tmp_path: Path) -> None:
    arrays = make_arrays(columns=14)
    path = save_npz(tmp_path / "chestmnist.npz", arrays)
    dataset, _ = run(prepare_params(path), tmp_path / "out")
    assert dataset.task == "multilabel"
    assert len(dataset.classes) == 14
    for split in SPLITS:
        np.testing.assert_array_equal(
            dataset.labels[dataset.indices(split)], arrays[f"{split}_labels"]
        )


def test_explicit_multilabel_with_one_column(tmp_path: Path) -> None:
    arrays = make_arrays(classes=2)
    path = save_npz(tmp_path / "breastmnist.npz", arrays)
    dataset, _ = run(
        prepare_params(path, task="multilabel", classes=["malignant"]), tmp_path / "out"
    )
    assert dataset.task == "multilabel"
    assert dataset.classes == ["malignant"]
    np.testing.assert_array_equal(dataset.labels[dataset.indices("val")], arrays["val_labels"])


def test_explicit_multiclass_with_one_hot_columns(tmp_path: Path) -> None:
    arrays = make_arrays()
    for split in SPLITS:
        arrays[f"{split}_labels"] = np.eye(3, dtype=np.uint8)[arrays[f"{split}_labels"][:, 0]]
    path = save_npz(tmp_path / "onehot.npz", arrays)
    dataset, _ = run(prepare_params(path, task="multiclass"), tmp_path / "out")
    assert dataset.task == "multiclass"
    np.testing.assert_array_equal(dataset.labels[dataset.indices("test")], arrays["test_labels"])


def test_one_dimensional_labels_are_one_column(tmp_path: Path) -> None:
    arrays = make_arrays(classes=4)
    for split in SPLITS:
        arrays[f"{split}_labels"] = arrays[f"{split}_labels"][:, 0].astype(np.int64)
    dataset, _ = run(prepare_params(save_npz(tmp_path / "flat.npz", arrays)), tmp_path / "out")
    assert dataset.classes == [f"class_{i}" for i in range(4)]
    np.testing.assert_array_equal(
        dataset.labels[dataset.indices("train")].argmax(axis=1), arrays["train_labels"]
    )


def test_explicit_class_names(tmp_path: Path) -> None:
    path = save_npz(tmp_path / "derma.npz", make_arrays(classes=3))
    dataset, _ = run(prepare_params(path, classes=["a", "b", "c"]), tmp_path / "out")
    assert dataset.classes == ["a", "b", "c"]


def test_uncompressed_savez_gives_the_same_dataset(tmp_path: Path) -> None:
    arrays = make_arrays(shape=(28, 28, 3))
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    packed = save_npz(tmp_path / "a" / "x.npz", arrays)
    plain = save_npz(tmp_path / "b" / "x.npz", arrays, compressed=False)
    assert zipfile.ZipFile(plain).infolist()[0].compress_type == zipfile.ZIP_STORED
    run(prepare_params(packed), tmp_path / "out-a")
    run(prepare_params(plain), tmp_path / "out-b")
    a, b = hashes(tmp_path / "out-a"), hashes(tmp_path / "out-b")
    assert {k: v for k, v in a.items() if k != "dataset.json"} == {
        k: v for k, v in b.items() if k != "dataset.json"
    }


@pytest.mark.parametrize("resize", ["pad", "stretch", "crop"])
@pytest.mark.parametrize("channels", [(), (3,)], ids=["grey", "rgb"])
def test_splits_ids_sources_hashes_and_pixels(
    tmp_path: Path, resize: str, channels: tuple[int, ...]
) -> None:
    arrays = make_arrays(shape=(28, 28, *channels))
    path = save_npz(tmp_path / "organamnist.npz", arrays)
    dataset, _ = run(prepare_params(path, size=20, resize=resize), tmp_path / "out")
    manifest = dataset.manifest

    assert dataset.image_size == (20, 20)
    assert dataset.meta["split_counts"] == COUNTS
    source = dataset.meta["source"]
    assert source == {
        "adapter": "medmnist",
        "file": "organamnist.npz",
        "file_sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
        "task": "multiclass",
        "resize": resize,
        "size": 20,
        "rejected_rows": 0,
    }
    for split in SPLITS:
        rows = dataset.indices(split)
        images = arrays[f"{split}_images"]
        assert len(rows) == len(images)
        part = manifest.iloc[rows]
        assert part["id"].tolist() == [f"{split}-{i:06d}" for i in range(len(images))]
        assert part["patient_id"].tolist() == part["id"].tolist()
        assert part["source"].tolist() == [
            f"organamnist.npz:{split}_images[{i}]" for i in range(len(images))
        ]
        assert part["source_sha256"].tolist() == [
            hashlib.sha256(np.ascontiguousarray(image).tobytes()).hexdigest() for image in images
        ]
        stored = dataset._gather("images", rows)[:, 0]
        for image, got in zip(images, stored, strict=True):
            if channels:
                grey = np.asarray(
                    (image.astype(np.int64) @ np.array([299, 587, 114])) / 255_000.0, np.float32
                )
            else:
                grey = image.astype(np.float32) / np.float32(255)
            np.testing.assert_array_equal(got, to_uint8(fit_image(grey, (20, 20), resize)))


def test_square_images_fit_the_same_in_every_mode(tmp_path: Path) -> None:
    path = save_npz(tmp_path / "x.npz", make_arrays())
    stored = []
    for resize in ("pad", "stretch", "crop"):
        run(prepare_params(path, size=40, resize=resize), tmp_path / resize)
        stored.append(hashes(tmp_path / resize)["images/shard-00000.npy"])
    assert len(set(stored)) == 1


def test_byte_identical_reruns_and_no_absolute_path(tmp_path: Path) -> None:
    path = save_npz(tmp_path / "chestmnist.npz", make_arrays(columns=14))
    run(prepare_params(path), tmp_path / "one")
    run(prepare_params(path), tmp_path / "two")
    one, two = hashes(tmp_path / "one"), hashes(tmp_path / "two")
    assert one == two
    assert len(one) >= 5  # dataset.json, manifest, several image shards
    for file in (tmp_path / "one").rglob("*"):
        if file.is_file():
            assert str(tmp_path).encode() not in file.read_bytes()


# --------------------------------------------------------------------------- bad inputs


def test_missing_file_is_a_configuration_error(tmp_path: Path) -> None:
    for path, found in ((tmp_path / "nope.npz", "not found"), (tmp_path, "is not a file")):
        out = tmp_path / "out"
        out.mkdir(exist_ok=True)
        with pytest.raises(ParamsError) as caught:
            write_medmnist(prepare_params(path), out, skip_invalid=False)
        message = str(caught.value)
        assert message.startswith(f"prepare.medmnist.path = {str(path)!r}: {found}")
        assert "configuration error" in message and "--skip-invalid" not in message
        assert list(out.iterdir()) == []


def test_not_a_zip(tmp_path: Path) -> None:
    path = tmp_path / "fake.npz"
    path.write_text("train_images,train_labels\n")
    (problem,) = failure(prepare_params(path), tmp_path / "out")
    assert problem.file == "fake.npz" and problem.row is None
    assert "not a readable .npz (zip) file" in problem.reason


def test_truncated_file(tmp_path: Path) -> None:
    path = save_npz(tmp_path / "cut.npz", make_arrays())
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    (problem,) = failure(prepare_params(path), tmp_path / "out")
    assert problem.file == "cut.npz" and "truncated" in problem.reason


def test_member_shorter_than_its_header(tmp_path: Path) -> None:
    arrays = make_arrays()
    path = tmp_path / "short.npz"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for key, array in arrays.items():
            data = npy_bytes(array)
            archive.writestr(f"{key}.npy", data[:-100] if key == "val_images" else data)
    (problem,) = failure(prepare_params(path), tmp_path / "out")
    assert problem.file == "short.npz:val_images" and problem.row is None
    assert "truncated" in problem.reason and "[3, 28, 28]" in problem.reason


def test_damaged_data_found_while_streaming(tmp_path: Path) -> None:
    """Damage the header check cannot see (the sizes are right) is found while reading."""
    path = save_npz(tmp_path / "bad.npz", make_arrays(), compressed=False)
    with zipfile.ZipFile(path) as archive:
        info = archive.getinfo("test_images.npy")
    data = bytearray(path.read_bytes())
    start = info.header_offset + 30 + len(info.filename) + len(info.extra)
    data[start + info.file_size - 10] ^= 0xFF  # a pixel near the end: the CRC no longer matches
    path.write_bytes(bytes(data))
    with pytest.raises(DataError) as caught:
        write_medmnist(prepare_params(path), tmp_path / "out", skip_invalid=True)
    (problem,) = caught.value.problems
    assert problem.file == "bad.npz:test_images" and "damaged" in problem.reason


def test_missing_keys_are_listed(tmp_path: Path) -> None:
    arrays = make_arrays()
    del arrays["val_labels"], arrays["test_images"]
    (problem,) = failure(prepare_params(save_npz(tmp_path / "m.npz", arrays)), tmp_path / "o")
    assert problem.file == "m.npz" and problem.row is None
    assert "missing array(s) ['val_labels', 'test_images']" in problem.reason
    assert "train_images" in problem.reason  # what is accepted


def test_count_mismatch(tmp_path: Path) -> None:
    arrays = make_arrays()
    arrays["val_labels"] = arrays["val_labels"][:2]
    (problem,) = failure(prepare_params(save_npz(tmp_path / "c.npz", arrays)), tmp_path / "o")
    assert problem == Problem("c.npz:val_labels", None, "2 labels for 3 images in val_images")


@pytest.mark.parametrize("shape", [(28, 28, 28), (28, 28, 28, 1)], ids=["4d", "5d"])
def test_3d_volumes_are_refused(tmp_path: Path, shape: tuple[int, ...]) -> None:
    arrays = make_arrays(shape=shape, counts={"train": 2, "val": 1, "test": 1})
    path = save_npz(tmp_path / "organmnist3d.npz", arrays)
    problems = failure(prepare_params(path), tmp_path / "out")
    assert [p.file for p in problems] == [f"organmnist3d.npz:{s}_images" for s in SPLITS]
    assert all("3D MedMNIST volumes are not supported (2D only)" in p.reason for p in problems)


def test_images_must_be_uint8_and_c_order(tmp_path: Path) -> None:
    arrays = make_arrays()
    arrays["train_images"] = arrays["train_images"].astype(np.float32)
    arrays["val_images"] = np.asfortranarray(arrays["val_images"])
    problems = failure(prepare_params(save_npz(tmp_path / "f.npz", arrays)), tmp_path / "o")
    assert [(p.file, p.row) for p in problems] == [
        ("f.npz:train_images", None),
        ("f.npz:val_images", None),
    ]
    assert "float32" in problems[0].reason and "uint8" in problems[0].reason
    assert "Fortran-ordered array not supported" in problems[1].reason


def test_out_of_range_multiclass_labels_name_their_rows(tmp_path: Path) -> None:
    arrays = make_arrays()
    labels = arrays["val_labels"].astype(np.int64)
    labels[2, 0] = -1
    arrays["val_labels"] = labels
    arrays["test_labels"] = arrays["test_labels"].astype(np.float64)
    arrays["test_labels"][0, 0] = 1.5
    problems = failure(prepare_params(save_npz(tmp_path / "r.npz", arrays)), tmp_path / "o")
    assert problems == [
        Problem("r.npz:val_labels", 3, "label -1 is not a class index; accepted: integers 0..2"),
        Problem("r.npz:test_labels", 1, "label 1.5 is not a class index; accepted: integers 0..2"),
    ]


def test_multilabel_value_two(tmp_path: Path) -> None:
    arrays = make_arrays(columns=14)
    arrays["train_labels"][4, 6] = 2
    (problem,) = failure(prepare_params(save_npz(tmp_path / "ch.npz", arrays)), tmp_path / "o")
    assert problem.file == "ch.npz:train_labels" and problem.row == 5
    assert "must be 0 or 1" in problem.reason and "2" in problem.reason


def test_explicit_multiclass_needs_one_hot_rows(tmp_path: Path) -> None:
    arrays = make_arrays(columns=4)
    arrays["test_labels"][:] = np.eye(4, dtype=np.uint8)[[0, 1, 2, 3]]
    arrays["test_labels"][1] = (1, 1, 0, 0)
    for split in ("train", "val"):
        arrays[f"{split}_labels"] = np.eye(4, dtype=np.uint8)[np.arange(COUNTS[split]) % 4]
    problems = failure(
        prepare_params(save_npz(tmp_path / "o.npz", arrays), task="multiclass"), tmp_path / "o"
    )
    assert [(p.file, p.row) for p in problems] == [("o.npz:test_labels", 2)]
    assert "not one-hot" in problems[0].reason


def test_classes_length_mismatch(tmp_path: Path) -> None:
    path = save_npz(tmp_path / "k.npz", make_arrays(classes=3))
    (problem,) = failure(prepare_params(path, classes=["a", "b"]), tmp_path / "o")
    assert problem.file == "k.npz" and problem.row is None
    assert "names 2 classes" in problem.reason and "have 3" in problem.reason


def test_absurd_class_index_is_a_file_problem(tmp_path: Path) -> None:
    arrays = make_arrays()
    arrays["test_labels"] = arrays["test_labels"].astype(np.int64)
    arrays["test_labels"][1, 0] = 123_456
    (problem,) = failure(prepare_params(save_npz(tmp_path / "h.npz", arrays)), tmp_path / "o")
    assert problem.file == "h.npz" and problem.row is None and "123456" in problem.reason


def test_label_columns_must_agree(tmp_path: Path) -> None:
    arrays = make_arrays(columns=14)
    arrays["val_labels"] = arrays["val_labels"][:, :13]
    (problem,) = failure(prepare_params(save_npz(tmp_path / "w.npz", arrays)), tmp_path / "o")
    assert "val_labels 13" in problem.reason and "train_labels 14" in problem.reason


def test_empty_split(tmp_path: Path) -> None:
    arrays = make_arrays(counts={"train": 4, "val": 0, "test": 2})
    (problem,) = failure(prepare_params(save_npz(tmp_path / "e.npz", arrays)), tmp_path / "o")
    assert problem.file == "e.npz:val_images" and problem.row is None
    assert "the val split is empty" in problem.reason


def test_all_problems_are_reported_together(tmp_path: Path) -> None:
    arrays = make_arrays(columns=14)
    arrays["train_labels"][1, 0] = 3
    arrays["train_labels"][5, 13] = 7
    arrays["test_labels"][3, 2] = 2
    arrays["val_images"] = arrays["val_images"].astype(np.int16)
    path = save_npz(tmp_path / "many.npz", arrays)
    problems = failure(prepare_params(path, classes=[f"c{i}" for i in range(13)]), tmp_path / "o")
    assert {(p.file, p.row) for p in problems} == {
        ("many.npz:val_images", None),
        ("many.npz", None),
        ("many.npz:train_labels", 2),
        ("many.npz:train_labels", 6),
        ("many.npz:test_labels", 4),
    }


def test_file_problems_are_fatal_even_when_skipping(tmp_path: Path) -> None:
    arrays = make_arrays()
    arrays["val_labels"] = arrays["val_labels"][:1]
    arrays["train_labels"] = arrays["train_labels"].astype(np.int8)
    arrays["train_labels"][0, 0] = -3
    path = save_npz(tmp_path / "x.npz", arrays)
    problems = failure(prepare_params(path), tmp_path / "o", skip_invalid=True)
    assert {(p.file, p.row) for p in problems} == {
        ("x.npz:val_labels", None),
        ("x.npz:train_labels", 1),
    }


def test_skip_invalid_leaves_bad_rows_out(tmp_path: Path) -> None:
    arrays = make_arrays(columns=14)
    arrays["train_labels"][2, 0] = 2
    arrays["train_labels"][6, 3] = 9
    arrays["test_labels"][0, 1] = 5
    path = save_npz(tmp_path / "chestmnist.npz", arrays)
    root = tmp_path / "out"
    dataset, skipped = run(prepare_params(path), root, skip_invalid=True)

    assert [(p.file, p.row) for p in skipped] == [
        ("chestmnist.npz:train_labels", 3),
        ("chestmnist.npz:train_labels", 7),
        ("chestmnist.npz:test_labels", 1),
    ]
    ids = dataset.manifest["id"].tolist()
    assert "train-000002" not in ids and "train-000006" not in ids and "test-000000" not in ids
    assert dataset.meta["split_counts"] == {"train": 5, "val": 3, "test": 3}
    assert dataset.meta["source"]["rejected_rows"] == 3
    kept = [i for i in range(7) if i not in (2, 6)]
    np.testing.assert_array_equal(
        dataset.labels[dataset.indices("train")], arrays["train_labels"][kept]
    )
    with open(root / "rejects.csv", newline="", encoding="utf-8") as handle:
        rejects = list(csv.DictReader(handle))
    assert [(r["file"], r["row"]) for r in rejects] == [
        ("chestmnist.npz:train_labels", "3"),
        ("chestmnist.npz:train_labels", "7"),
        ("chestmnist.npz:test_labels", "1"),
    ]
    assert all(r["reason"] for r in rejects)


def test_skip_invalid_cannot_empty_a_split(tmp_path: Path) -> None:
    arrays = make_arrays(columns=2)
    arrays["val_labels"][:, 0] = 3
    path = save_npz(tmp_path / "v.npz", arrays)
    problems = failure(prepare_params(path), tmp_path / "o", skip_invalid=True)
    # the emptied split (a problem of the whole array) is listed first, then the three rows
    assert problems[0].file == "v.npz:val_labels" and "would be empty" in problems[0].reason
    assert [p.row for p in problems] == [None, 1, 2, 3]


# --------------------------------------------------------------------------- streaming


def test_streams_without_numpy_load(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The images are read block by block (never by ``np.load``): the peak memory of the
    adapter stays a fraction of the images' size."""
    arrays = make_arrays(counts={"train": 1200, "val": 20, "test": 20}, shape=(64, 64, 3))
    path = save_npz(tmp_path / "big.npz", arrays)
    params = prepare_params(path, size=16).model_copy(update={"shard_size": 256})

    load = np.load

    def refuse(file: object, *args: object, **kwargs: object) -> object:
        if str(file).endswith(".npz"):
            raise AssertionError("np.load reads whole arrays; the adapter must stream")
        return load(file, *args, **kwargs)  # the written shards, memory-mapped to verify them

    monkeypatch.setattr(np, "load", refuse)
    monkeypatch.setattr(medmnist, "BLOCK", 16)
    root = tmp_path / "out"
    root.mkdir()
    tracemalloc.start()
    try:
        write_medmnist(params, root, skip_invalid=False)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    monkeypatch.undo()
    total = arrays["train_images"].nbytes  # 14.7 MB
    assert peak < total / 4, f"peak {peak} bytes for {total} bytes of images"
    dataset = PreparedDataset.open(root)
    assert len(dataset) == 1240
    assert len(dataset.meta["shards"]) == 5


def test_dataset_json_is_valid_json(tmp_path: Path) -> None:
    path = save_npz(tmp_path / "x.npz", make_arrays())
    run(prepare_params(path), tmp_path / "out")
    meta = json.loads((tmp_path / "out" / "dataset.json").read_text(encoding="utf-8"))
    assert meta["source"]["file"] == "x.npz"
    assert not (tmp_path / "out" / "rejects.csv").exists()


def test_the_prepare_stage_runs_medmnist_and_keeps_nothing_on_failure(tmp_path: Path) -> None:
    from sibnet.config import validate_params as validate
    from sibnet.stages.prepare import prepare

    arrays = make_arrays(columns=14)
    arrays["val_labels"][1, 3] = 7  # one bad row
    path = save_npz(tmp_path / "chestmnist.npz", arrays)
    raw = {
        "prepare": {
            "source": "medmnist",
            "dataset": "chest",
            "size": 16,
            "medmnist": {"path": str(path)},
        },
        "segment": {"structures": []},
        "tracking": {"enabled": False},
    }
    out = tmp_path / "chest"
    with pytest.raises(DataError, match=r"chestmnist.npz:val_labels, row 2"):
        prepare(validate(raw), prepared=out)
    assert not out.exists()
    dataset = prepare(validate(raw), prepared=out, skip_invalid=True)
    assert dataset.meta["split_counts"] == {"train": 7, "val": 2, "test": 4}
    assert dataset.meta["source"]["rejected_rows"] == 1
    assert "row" in (out / "rejects.csv").read_text()
