from __future__ import annotations

import json
from pathlib import Path

import pytest

from sibnet.files import atomic_dir, atomic_file, sha256_bytes, sha256_file, write_json


def test_atomic_file_replaces_only_on_success(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "out.txt"
    with atomic_file(target) as tmp:
        tmp.write_text("first")
    assert target.read_text() == "first"
    with pytest.raises(RuntimeError), atomic_file(target) as tmp:
        tmp.write_text("half-written")
        raise RuntimeError("stage failed")
    assert target.read_text() == "first"
    assert [p.name for p in target.parent.iterdir()] == ["out.txt"]


def test_atomic_dir_swaps_whole_folders(tmp_path: Path) -> None:
    target = tmp_path / "prepared"
    with atomic_dir(target) as tmp:
        (tmp / "a").write_text("1")
    with atomic_dir(target) as tmp:
        (tmp / "b").write_text("2")
    assert sorted(p.name for p in target.iterdir()) == ["b"]
    with pytest.raises(ValueError), atomic_dir(target) as tmp:
        (tmp / "c").write_text("3")
        raise ValueError("adapter failed")
    assert sorted(p.name for p in target.iterdir()) == ["b"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["prepared"]


def test_write_json_is_stable_and_strict(tmp_path: Path) -> None:
    path = tmp_path / "m.json"
    write_json(path, {"b": 1, "a": [1.5, None]})
    assert path.read_text() == '{\n  "a": [\n    1.5,\n    null\n  ],\n  "b": 1\n}\n'
    assert json.loads(path.read_text()) == {"a": [1.5, None], "b": 1}
    with pytest.raises(ValueError):
        write_json(path, {"x": float("nan")})
    assert json.loads(path.read_text())["b"] == 1


def test_hashes(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"abc")
    expected = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    assert sha256_file(path) == expected
    assert sha256_bytes(b"a", b"bc") == expected


def test_sha256_file_sees_a_rewrite_of_the_same_size_at_the_same_mtime(tmp_path: Path) -> None:
    import hashlib
    import os

    path = tmp_path / "f.bin"
    path.write_bytes(b"a" * 100)
    first = sha256_file(path)
    assert sha256_file(path) == first == hashlib.sha256(b"a" * 100).hexdigest()
    times = path.stat()
    with path.open("r+b") as handle:  # same inode, same size, mtime set back
        handle.write(b"b")
    os.utime(path, ns=(times.st_atime_ns, times.st_mtime_ns))
    assert sha256_file(path) == hashlib.sha256(b"b" + b"a" * 99).hexdigest()
