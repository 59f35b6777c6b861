"""Lineage records: what produced each artifact, from what, with which params, code and machine.

Every stage run through the ``sibnet`` command (so every Snakemake job and DVC stage) leaves a
**record** in ``.sibnet/lineage/`` (beside ``params.yaml``, git-ignored): one JSON file per job,
replaced when the job runs again, holding

- the stage, the job (``<stage>/<dataset>[/<method>/seed<k>]``) and the command line;
- every input and output with its content hash (a folder: the hash of its files' paths and
  hashes, and each file's hash);
- the exact params it read (the keys :data:`sibnet.dag.STAGES` declares for it) and the hash of
  the params file;
- the code version (git commit, whether the tree was dirty, the sibnet version);
- the environment (Python, platform, the versions of the packages that shape the numbers);
- its MLflow run id (``null`` with tracking off), the pipeline invocation it ran in
  (:mod:`sibnet.invocation`: the ``snakemake`` or ``dvc repro`` run, also an MLflow tag), start
  and end time (UTC) and host name.

Paths are relative to the working directory (the repository root), so records stay valid when
the repository moves; nothing machine-specific beyond the host name is kept, and no
environment variable is (tracking credentials included) but the invocation id
``SIBNET_INVOCATION``. ``sibnet audit``
(:mod:`sibnet.stages.audit`) checks the records against the files and joins them into
``results/audit/lineage.{json,md}``.
"""

from __future__ import annotations

import json
import os
import platform
import socket
import sys
from collections.abc import Mapping
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from sibnet.files import sha256_bytes, sha256_file, write_json

__all__ = [
    "LINEAGE_DIR",
    "PACKAGES",
    "RECORD_FORMAT",
    "digest",
    "entry_files",
    "environment",
    "job_name",
    "now",
    "output_files",
    "read_document",
    "read_records",
    "relative",
    "tree_files",
    "write_record",
]

LINEAGE_DIR = Path(".sibnet/lineage")
"""Where job records are kept, relative to the working directory."""

RECORD_FORMAT = "sibnet-lineage-record/1"

PACKAGES = (
    "sibnet",
    "torch",
    "monai",
    "numpy",
    "scipy",
    "scikit-image",
    "pandas",
    "pyarrow",
    "pillow",
    "pydicom",
    "pydantic",
    "mlflow",
    "snakemake",
    "dvc",
)
"""Packages whose versions every record lists."""


def now() -> str:
    """The current UTC time, ISO 8601 with seconds."""
    return datetime.now(UTC).isoformat(timespec="seconds")


def environment() -> dict[str, Any]:
    """Python, platform and the installed versions of :data:`PACKAGES` (``null`` if absent)."""

    def version(name: str) -> str | None:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            return None

    return {
        "python": platform.python_version(),
        "implementation": sys.implementation.name,
        "platform": platform.platform(),
        "machine": platform.machine(),
        "packages": {name: version(name) for name in PACKAGES},
    }


def relative(path: str | Path) -> str:
    """``path`` relative to the working directory, POSIX form (no absolute paths in records)."""
    return Path(os.path.relpath(Path(path).absolute(), Path.cwd())).as_posix()


def tree_files(path: Path) -> list[Path]:
    """The files of an artifact: the file itself, or every file under a folder, sorted, leaving
    out hidden names (engine markers such as Snakemake's ``.snakemake_timestamp``)."""
    if path.is_file():
        return [path]
    return sorted(
        p
        for p in path.rglob("*")
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(path).parts)
    )


def digest(path: str | Path) -> dict[str, Any]:
    """Content hash of a file or folder.

    Returns:
        ``{"path", "sha256", "bytes"}``, plus for a folder ``"files"``: relative path → SHA-256
        of each file; the folder's ``sha256`` hashes those ``path\\0hash`` lines in order.
        ``{"path", "missing": true}`` when nothing is there.
    """
    path = Path(path)
    entry: dict[str, Any] = {"path": relative(path)}
    if not path.exists():
        return entry | {"missing": True}
    if path.is_file():
        return entry | {"sha256": sha256_file(path), "bytes": path.stat().st_size}
    members = tree_files(path)
    files = {p.relative_to(path).as_posix(): sha256_file(p) for p in members}
    lines = "".join(f"{name}\0{sha}\n" for name, sha in files.items())
    return entry | {
        "sha256": sha256_bytes(lines.encode()),
        "bytes": sum(p.stat().st_size for p in members),
        "files": files,
    }


def job_name(stage: str, dataset: str, method: str | None = None, seed: int | None = None) -> str:
    """``<stage>/<dataset>`` or ``<stage>/<dataset>/<method>/seed<k>``."""
    parts = [stage, dataset] + ([method, f"seed{seed}"] if method is not None else [])
    return "/".join(parts)


def write_record(
    *,
    stage: str,
    dataset: str,
    method: str | None,
    seed: int | None,
    argv: list[str],
    params_file: Path,
    params: Mapping[str, Any],
    inputs: Mapping[str, Path],
    outputs: Mapping[str, Path],
    code: Mapping[str, str],
    mlflow_run_id: str | None,
    started: str,
    ended: str,
    invocation: Mapping[str, str] | None = None,
    records: Path = LINEAGE_DIR,
) -> Path:
    """Write (replace) the record of one job; returns its path. See the module docstring."""
    job = job_name(stage, dataset, method, seed)
    record = {
        "format": RECORD_FORMAT,
        "stage": stage,
        "job": job,
        "dataset": dataset,
        "method": method,
        "seed": seed,
        "command": " ".join(["sibnet", *argv]),
        "params_file": digest(params_file),
        "params": dict(params),
        "inputs": {name: digest(path) for name, path in inputs.items()},
        "outputs": {name: digest(path) for name, path in outputs.items()},
        "code": dict(code),
        "environment": environment(),
        "mlflow_run_id": mlflow_run_id,
        "invocation": dict(invocation) if invocation is not None else None,
        "started": started,
        "ended": ended,
        "host": socket.gethostname(),
    }
    path = records / f"{job}.json"
    write_json(path, record)
    return path


def entry_files(entry: Mapping[str, Any]) -> dict[str, str]:
    """Path → SHA-256 of every file of one recorded input or output (:func:`digest`'s entry:
    a folder's files under its path; nothing for a missing one)."""
    if "files" in entry:
        return {f"{entry['path']}/{name}": sha for name, sha in entry["files"].items()}
    return {} if entry.get("missing") else {entry["path"]: entry["sha256"]}


def output_files(record: Mapping[str, Any]) -> dict[str, str]:
    """Path → SHA-256 of every file of every output of a job record."""
    found: dict[str, str] = {}
    for entry in record["outputs"].values():
        found |= entry_files(entry)
    return found


def read_records(records: Path = LINEAGE_DIR) -> list[dict[str, Any]]:
    """Every record under ``records`` (sorted by job); unreadable files raise ``ValueError``."""
    found = [read_document(path, RECORD_FORMAT) for path in sorted(Path(records).rglob("*.json"))]
    return sorted(found, key=lambda r: r["job"])


def read_document(path: Path, expected: str) -> dict[str, Any]:
    """The JSON document in ``path`` whose ``format`` must be ``expected``; an unreadable or
    other document raises ``ValueError`` naming the file."""
    try:
        document = json.loads(Path(path).read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: not a valid {expected} document: {error}") from None
    if not isinstance(document, dict) or document.get("format") != expected:
        found = document.get("format") if isinstance(document, dict) else None
        raise ValueError(f"{path}: format {found!r}, expected {expected}")
    return document
