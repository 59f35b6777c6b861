"""Problems found in a raw dataset: collected, reported together, or skipped into a rejects file.

Every adapter checks its whole source and gathers each problem as a :class:`Problem` (file,
row, reason) instead of stopping at the first. ``sibnet prepare`` then either fails with a
:class:`DataError` listing them all, before writing any output, or — with ``--skip-invalid``
(``prepare.skip_invalid``) — leaves the rows out and writes ``rejects.csv`` beside the prepared
dataset. A problem names the file and the row, never the values of columns the pipeline does
not read (those are not even loaded).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from sibnet.files import atomic_file

__all__ = ["REJECTS_COLUMNS", "DataError", "Problem", "format_problems", "write_rejects"]

REJECTS_COLUMNS = ("file", "row", "reason")
"""Columns of ``rejects.csv`` (and of the problem list of a :class:`DataError`)."""

_SHOWN = 50
"""Problems printed in a :class:`DataError` message; the rest are counted (and in the file)."""


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a raw dataset.

    Attributes:
        file: the file at fault: the label table (CSV, ``.npz``) or an image or mask, as a
            path relative to the data root where it lies inside it.
        row: 1-based data row of the label table (the header is not counted); ``None`` for a
            problem of the whole file or dataset.
        reason: what is wrong and what is accepted.
    """

    file: str
    row: int | None
    reason: str

    def __str__(self) -> str:
        where = self.file if self.row is None else f"{self.file}, row {self.row}"
        return f"{where}: {self.reason}"


def format_problems(problems: Sequence[Problem], limit: int = _SHOWN) -> str:
    """The first ``limit`` problems, one per line, and a count of the rest."""
    lines = [f"  - {p}" for p in problems[:limit]]
    if len(problems) > limit:
        lines.append(f"  ... and {len(problems) - limit} more")
    return "\n".join(lines)


class DataError(ValueError):
    """The raw dataset has problems; nothing was written. ``problems`` lists them all."""

    def __init__(self, problems: Sequence[Problem], *, report: Path | None = None) -> None:
        self.problems = list(problems)
        self.report = report
        where = f"; the full list is in {report}" if report is not None else ""
        super().__init__(
            f"{len(self.problems)} problem(s) in the raw dataset, so nothing was written{where}. "
            "Fix them, or rerun with --skip-invalid (prepare.skip_invalid: true) to leave those "
            "rows out and list them in rejects.csv:\n" + format_problems(self.problems)
        )


def write_rejects(path: Path, problems: Sequence[Problem]) -> None:
    """Write ``problems`` as a CSV with :data:`REJECTS_COLUMNS`, atomically."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(REJECTS_COLUMNS)
    for problem in problems:
        writer.writerow([problem.file, "" if problem.row is None else problem.row, problem.reason])
    with atomic_file(path) as tmp:
        tmp.write_text(buffer.getvalue(), encoding="utf-8")
