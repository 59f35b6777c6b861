"""Benchmarks of speed, memory and quality targets (see README.md); shared helpers."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from sibnet.files import atomic_file


def write_result(path: Path, payload: dict[str, Any]) -> None:
    """Write a benchmark's result as indented JSON (keys in order), atomically."""
    with atomic_file(path) as tmp:
        tmp.write_text(json.dumps(payload, indent=2) + "\n")
