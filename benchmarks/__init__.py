"""Benchmarks of speed, memory and quality targets (see README.md); shared helpers."""

from __future__ import annotations

import io
import json
import subprocess
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sibnet.files import atomic_file


def write_result(path: Path, payload: dict[str, Any]) -> None:
    """Write a benchmark's result as indented JSON (keys in order), atomically."""
    with atomic_file(path) as tmp:
        tmp.write_text(json.dumps(payload, indent=2) + "\n")


def export_revision(revision: str, destination: Path, *paths: str) -> Path:
    """The files of git revision ``revision`` (only ``paths``, if given) written under
    ``destination`` with ``git archive``; returns ``destination``. For before/after benchmarks."""
    from tests.workflow.repo import ROOT

    command = ["git", "archive", "--format=tar", revision, *paths]
    archive = subprocess.run(command, cwd=ROOT, capture_output=True, check=True).stdout
    destination.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(destination, filter="data")
    return destination


def interleaved_medians(steps: dict[str, Callable[[], None]], repeats: int) -> dict[str, float]:
    """Median seconds of each step kind: one warm-up call of each, then ``repeats`` rounds
    calling every kind once in turn (interleaved, so drifts of the machine hit every kind)."""
    import statistics
    import time

    for run in steps.values():
        run()
    times: dict[str, list[float]] = {kind: [] for kind in steps}
    for _ in range(repeats):
        for kind, run in steps.items():
            started = time.perf_counter()
            run()
            times[kind].append(time.perf_counter() - started)
    return {kind: statistics.median(values) for kind, values in times.items()}
