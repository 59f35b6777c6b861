"""Problems found in a raw dataset: collected, reported together, or skipped into a rejects file.

Every adapter checks its whole source and gathers each problem as a :class:`Problem` (file,
row, reason) instead of stopping at the first. ``sibnet prepare`` then either fails with a
:class:`DataError` listing them all, before writing any output, or — with ``--skip-invalid``
(``prepare.skip_invalid``) — leaves the rows out and writes ``rejects.csv`` beside the prepared
dataset. A problem names the file and the row, never the values of columns the pipeline does
not read (those are not even loaded).

Problems are listed in row order, by :func:`order_problems`, wherever they are reported or
written (the message of a :class:`DataError`, ``problems.csv``, ``rejects.csv``): file by file,
in the order the source reads its files, each file's whole-file problems (``row`` ``None``)
first, then its rows in ascending order, whichever check (reading the table, decoding an
image) found them. Some problems no skipping of rows can solve (an empty split, a file that
cannot be read at all): a :class:`DataError` of such problems (``skippable=False``) does not
suggest ``--skip-invalid``.

A file or column that the *params* name but that does not exist is not a problem of the data but
a configuration error (:class:`~sibnet.config.ParamsError`, naming the key), raised by each
source's check before any row is read.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from sibnet.errors import SibnetError
from sibnet.files import atomic_file

__all__ = [
    "REJECTS_COLUMNS",
    "DataError",
    "Problem",
    "format_problems",
    "order_problems",
    "write_rejects",
]

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


def order_problems(problems: Iterable[Problem], files: Sequence[str] = ()) -> list[Problem]:
    """``problems`` in row order: by file, then whole-file problems first, then by row.

    Files are ordered as in ``files`` (the tables a source reads, in reading order), then any
    other file in the order of its first problem in ``problems``. Problems of the same row
    keep their order (the sort is stable), so ordering an ordered list changes nothing.
    """
    problems = list(problems)
    rank = {name: index for index, name in enumerate(files)}
    for problem in problems:
        rank.setdefault(problem.file, len(rank))
    return sorted(
        problems,
        key=lambda p: (rank[p.file], p.row is not None, 0 if p.row is None else p.row),
    )


def format_problems(problems: Sequence[Problem], limit: int = _SHOWN) -> str:
    """The first ``limit`` problems, one per line, and a count of the rest."""
    lines = [f"  - {p}" for p in problems[:limit]]
    if len(problems) > limit:
        lines.append(f"  ... and {len(problems) - limit} more")
    return "\n".join(lines)


class DataError(ValueError, SibnetError):
    """The raw dataset has problems; nothing was written. ``problems`` lists them all, in row
    order (:func:`order_problems`).

    Args:
        problems: the problems found.
        report: where the full list was written, if it was.
        skippable: leaving rows out (``--skip-invalid``) would solve them; ``False`` for
            problems it cannot solve (an empty split, an unreadable file), whose message then
            does not suggest it.
    """

    def __init__(
        self, problems: Sequence[Problem], *, report: Path | None = None, skippable: bool = True
    ) -> None:
        self.problems = order_problems(problems)
        self.report = report
        self.skippable = skippable
        where = f"; the full list is in {report}" if report is not None else ""
        advice = (
            "Fix them, or rerun with --skip-invalid (prepare.skip_invalid: true) to leave those "
            "rows out and list them in rejects.csv:"
            if skippable
            else "Fix them:"
        )
        super().__init__(
            f"{len(self.problems)} problem(s) in the raw dataset, so nothing was written{where}. "
            f"{advice}\n" + format_problems(self.problems)
        )


def write_rejects(path: Path, problems: Sequence[Problem]) -> None:
    """Write ``problems`` as a CSV with :data:`REJECTS_COLUMNS`, in row order
    (:func:`order_problems`), atomically."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(REJECTS_COLUMNS)
    for problem in order_problems(problems):
        writer.writerow([problem.file, "" if problem.row is None else problem.row, problem.reason])
    with atomic_file(path) as tmp:
        tmp.write_text(buffer.getvalue(), encoding="utf-8")
