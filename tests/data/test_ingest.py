"""The ingestion engine: resume after an interruption, problems kept for the rerun, progress."""

from __future__ import annotations

import dataclasses
import hashlib
import os
from pathlib import Path

import pytest

import sibnet.data.ingest as ingest_module
from sibnet.config import validate_params
from sibnet.data.adapters.folder import plan_folder
from sibnet.data.ingest import ingest, work_folder
from sibnet.data.plan import ImageSettings
from sibnet.data.problems import DataError
from tests.data.image_files import corrupt, radiograph, write_png

SETTINGS = ImageSettings((24, 24), "pad")
_DECODE_CHUNK = ingest_module._decode_chunk


class Interrupted(Exception):
    """Stands for a kill in the middle of a run."""


def _dataset(root: Path, n: int = 20) -> Path:
    lines = ["path,a,b"]
    for i in range(n):
        write_png(root / f"img/{i:02d}.png", radiograph(30, 26, seed=i))
        lines.append(f"img/{i:02d}.png,{i % 2},{int(i % 3 == 0)}")
    (root / "labels.csv").write_text("\n".join(lines) + "\n")
    return root


def _plan(root: Path):
    params = validate_params(
        {
            "prepare": {
                "source": "folder",
                "dataset": "d",
                "split": {"val": 0.2, "test": 0.2, "seed": 0},
                "folder": {"root": str(root), "classes": ["a", "b"]},
            },
            "segment": {"structures": []},
        }
    )
    return plan_folder(params.prepare)


def _hashes(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _run(root: Path, out: Path, *, settings: ImageSettings = SETTINGS, **kwargs):
    options = {"shard_size": 4, "workers": 1, "skip_invalid": False}
    plan = dataclasses.replace(_plan(root), settings=settings)
    return ingest(plan, out, **(options | kwargs))


def _counting(monkeypatch: pytest.MonkeyPatch, fail_at: int | None = None) -> list[int]:
    """Record which chunks get decoded; raise (an interruption) when reaching ``fail_at``."""
    decoded: list[int] = []
    original = _DECODE_CHUNK

    def wrapper(work, index, *args, **kwargs):
        if index == fail_at:
            raise Interrupted(f"interrupted before chunk {index}")
        decoded.append(index)
        return original(work, index, *args, **kwargs)

    monkeypatch.setattr(ingest_module, "_decode_chunk", wrapper)
    return decoded


def test_an_interrupted_run_resumes_without_redoing_finished_shards(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = _dataset(tmp_path / "raw")
    reference = tmp_path / "reference"
    _run(root, reference)

    out = tmp_path / "out"
    decoded = _counting(monkeypatch, fail_at=3)
    with pytest.raises(Interrupted):
        _run(root, out)
    assert decoded == [0, 1, 2]
    assert not out.exists()
    assert sorted(p.name for p in work_folder(out).glob("chunk-*.json")) == [
        f"chunk-0000{i}.json" for i in range(3)
    ]

    decoded = _counting(monkeypatch)
    _run(root, out)
    assert decoded == [3, 4]
    assert _hashes(out) == _hashes(reference)
    assert not work_folder(out).exists()


def test_a_changed_file_redoes_only_its_shard_and_new_settings_start_over(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = _dataset(tmp_path / "raw")
    out = tmp_path / "out"
    _counting(monkeypatch, fail_at=4)
    with pytest.raises(Interrupted):
        _run(root, out)
    image = root / "img/05.png"  # planned in manifest order; find its chunk
    plan = _plan(root)
    chunk = next(i for i, r in enumerate(plan.records) if r.source == "img/05.png") // 4
    write_png(image, radiograph(30, 26, seed=99))
    os.utime(image, ns=(1, 1))
    decoded = _counting(monkeypatch, fail_at=4)
    with pytest.raises(Interrupted):
        _run(root, out)
    assert decoded == [chunk]
    decoded = _counting(monkeypatch)
    _run(root, out, settings=ImageSettings((20, 20), "pad"))
    assert decoded == [0, 1, 2, 3, 4]


def test_a_failed_run_keeps_its_work_and_the_fixed_rerun_reuses_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = _dataset(tmp_path / "raw")
    plan = _plan(root)
    bad = plan.records[9]
    good_bytes = (root / bad.source).read_bytes()
    corrupt(root / bad.source)
    out = tmp_path / "out"
    with pytest.raises(DataError) as caught:
        _run(root, out)
    assert [(p.row, "cannot decode" in p.reason) for p in caught.value.problems] == [
        (bad.row, True)
    ]
    assert caught.value.report == work_folder(out) / "problems.csv"
    assert caught.value.report.is_file()
    assert not out.exists()
    (root / bad.source).write_bytes(good_bytes)
    decoded = _counting(monkeypatch)
    _run(root, out)
    assert decoded == [9 // 4]


def test_skipping_a_whole_shard_renumbers_the_rest(tmp_path: Path) -> None:
    root = _dataset(tmp_path / "raw")
    plan = _plan(root)
    for record in plan.records[4:8]:  # the whole second chunk
        corrupt(root / record.source)
    out = tmp_path / "out"
    manifest = _run(root, out, skip_invalid=True)
    assert len(manifest) == 16
    assert sorted(set(manifest["shard"])) == [0, 1, 2, 3]
    assert sorted(p.name for p in (out / "images").iterdir()) == [
        f"shard-0000{i}.npy" for i in range(4)
    ]
    assert len((out / "rejects.csv").read_text().splitlines()) == 5


def test_parallel_workers_give_the_same_bytes(tmp_path: Path) -> None:
    root = _dataset(tmp_path / "raw")
    _run(root, tmp_path / "one", workers=1)
    _run(root, tmp_path / "two", workers=2)
    assert _hashes(tmp_path / "one") == _hashes(tmp_path / "two")
