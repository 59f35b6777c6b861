"""What the file-based adapters (CheXpert, folder) share: label tables, paths and mask files.

- **Label tables** are read with only the columns the pipeline needs (``usecols``): other
  columns — names, free text, dates, demographics — are never loaded, so they cannot reach an
  output, a log or MLflow. Every cell is read as text (blank → ``""``), so a value is judged
  exactly as written. A table, or a column, that the params name but that is not there is a
  configuration error (:class:`~sibnet.config.ParamsError` naming the params key, raised by
  :func:`check_table` before any row is read), not a problem of the data.
- **Image paths** in a table are relative to the data root, POSIX or Windows separators. An
  absolute path, or one whose ``..`` parts climb out of the root, is a problem of its row. The
  check is lexical (symbolic links inside the root are followed when reading, not judged).
- **Masks**, either way one file per class (lesion masks) or organ (segmentation masks):

  - in a mask folder as ``<image path without suffix>/<name>.png`` (:func:`mask_files`). An
    image is annotated when its folder exists. In an annotated folder a missing class file is
    an empty mask (no lesion of that class); a missing organ file is a problem; a file that
    names no class or organ is a problem.
  - named per row in the table, one column per class or organ (:func:`mask_cells`), by paths
    relative to the data root under the same rules as image paths. An image is annotated when
    any of its mask cells is filled; an empty cell is an empty mask (classes) or a problem
    (organs, once another organ's cell is filled); a file named but not there is a problem
    of its row.
- **Unlabeled images** (``unlabeled_fraction``): :func:`withhold_labels` makes the train images
  of a fraction of the train patients unlabeled, their labels withheld.
"""

from __future__ import annotations

import os
import posixpath
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path, PurePosixPath

import numpy as np
import pandas as pd

from sibnet.config import ParamsError
from sibnet.data.plan import Record
from sibnet.data.problems import DataError, Problem
from sibnet.data.splits import unlabeled_groups

__all__ = [
    "MASK_SUFFIX",
    "check_directory",
    "check_table",
    "find_duplicates",
    "mask_cells",
    "mask_files",
    "read_table",
    "relative_image_path",
    "withhold_labels",
]

MASK_SUFFIX = ".png"


def check_directory(folder: str | Path | None, key: str, what: str) -> None:
    """Check that the folder the params key ``key`` names exists (``None``: not set).

    Raises:
        ParamsError: it does not; the message names the key, the folder and ``what`` it is.
    """
    if folder is None or Path(folder).is_dir():
        return
    found = "is not a folder" if Path(folder).exists() else "not found"
    raise ParamsError(
        f"{key} = {str(folder)!r}: folder {found} (a configuration error: nothing was read); "
        f"set {key} to {what}"
    )


def _header(path: Path, name: str) -> list[str]:
    try:
        return pd.read_csv(path, nrows=0).columns.tolist()
    except (ValueError, UnicodeDecodeError, pd.errors.ParserError) as error:
        raise DataError(
            [Problem(name, None, f"not a readable CSV file: {error}")], skippable=False
        ) from None


def check_table(path: Path, columns: Mapping[str, str], *, key: str, name: str) -> None:
    """Check that the CSV ``path`` exists and has ``columns`` (reads its header only).

    Args:
        path: the CSV file.
        columns: each column needed → the params key that names it (e.g. ``'patient'`` →
            ``prepare.folder.patient_column``).
        key: the params key that names the file (e.g. ``prepare.folder.csv``).
        name: how problems name the file.

    Raises:
        ParamsError: the file is not there, or lacks a column: a configuration error, naming the
            keys, the file and the table's columns.
        DataError: the file is not a readable CSV (not skippable).
    """
    if not path.is_file():
        found = "is not a file" if path.exists() else "not found"
        raise ParamsError(
            f"{key}: the label table {path} {found} (a configuration error: nothing was read); "
            f"set {key} to the CSV file"
        )
    header = _header(path, name)
    missing: dict[str, list[str]] = {}
    for column, named_by in columns.items():
        if column not in header:
            missing.setdefault(named_by, []).append(column)
    if missing:
        lines = "\n".join(f"  - {k}: {', '.join(map(repr, c))}" for k, c in missing.items())
        raise ParamsError(
            f"{name} ({key}) lacks column(s) the params name (a configuration error: nothing "
            f"was read):\n{lines}\nits columns are {header}; fix the params or the table's "
            "header"
        )


def read_table(path: Path, columns: Mapping[str, str], name: str, *, key: str) -> pd.DataFrame:
    """The ``columns`` of the CSV ``path`` as text (blank cells ``""``), in file order.

    Args:
        path: the CSV file.
        columns: the columns to read (all others are never loaded), each → the params key
            naming it (see :func:`check_table`).
        name: how problems name the file (relative to the data root).
        key: the params key that names the file.

    Raises:
        ParamsError: the file is missing or lacks a column (:func:`check_table`).
        DataError: the file is unreadable (not skippable).
    """
    check_table(path, columns, key=key, name=name)
    try:
        return pd.read_csv(
            path, usecols=list(columns), dtype=str, keep_default_na=False, na_filter=False
        )[list(columns)]
    except (ValueError, UnicodeDecodeError, pd.errors.ParserError) as error:
        raise DataError(
            [Problem(name, None, f"not a readable CSV file: {error}")], skippable=False
        ) from None


def relative_image_path(raw: str, what: str = "image") -> tuple[str | None, str | None]:
    """Normalise a table's image (or mask: ``what``) path: ``(POSIX path relative to the
    root, None)`` or ``(None, reason)`` when it is empty, absolute or escapes the root."""
    text = raw.strip().replace("\\", "/")
    if not text:
        return None, f"the {what} path is empty"
    if text.startswith("/") or PurePosixPath(text).drive or (len(text) > 1 and text[1] == ":"):
        return None, f"{what} path {raw!r} is absolute; paths must be relative to the data root"
    normal = posixpath.normpath(text)
    if normal == ".." or normal.startswith("../"):
        return None, f"{what} path {raw!r} escapes the data root"
    return normal, None


def find_duplicates(paths: Sequence[str | None], where: Sequence[tuple[str, int]]) -> list[Problem]:
    """A problem for each repeat of an image path (the first occurrence is kept).

    Args:
        paths: normalised paths (``None`` entries are ignored).
        where: ``(table, row)`` of each path.
    """
    first: dict[str, tuple[str, int]] = {}
    problems = []
    for path, (table, row) in zip(paths, where, strict=True):
        if path is None:
            continue
        if path in first:
            earlier = first[path]
            problems.append(
                Problem(
                    table, row, f"duplicate image path {path} (also {earlier[0]} row {earlier[1]})"
                )
            )
        else:
            first[path] = (table, row)
    return problems


def mask_files(
    folder: Path | None, source: str, names: Sequence[str], *, required: bool
) -> tuple[tuple[str | None, ...] | None, str | None]:
    """The mask files of one image: ``(files, None)`` or ``(None, reason)``.

    Args:
        folder: the mask folder (``None``: the source has no masks of this kind).
        source: the image path relative to the data root.
        names: class or organ names, in channel order.
        required: every name must have a file (organs) or may lack one (classes: empty mask).

    Returns:
        ``files`` is ``None`` when the image is not annotated (no mask folder of its own),
        else one path per name (``None`` for an empty mask).
    """
    if folder is None:
        return None, None
    directory = folder / PurePosixPath(source).with_suffix("")
    if not directory.is_dir():
        return None, None
    present = {entry.name for entry in os.scandir(directory) if entry.is_file()}
    accepted = {f"{name}{MASK_SUFFIX}" for name in names}
    stray = sorted(present - accepted)
    if stray:
        return None, (
            f"mask file(s) {stray} in {directory.name}/ name no known mask; "
            f"accepted: {sorted(accepted)}"
        )
    files = tuple(
        str(directory / f"{n}{MASK_SUFFIX}") if f"{n}{MASK_SUFFIX}" in present else None
        for n in names
    )
    if required and None in files:
        missing = [n for n, f in zip(names, files, strict=True) if f is None]
        return None, f"organ mask(s) {missing} missing in {directory.name}/"
    return files, None


def mask_cells(
    root: Path,
    row: Mapping[str, str],
    columns: Mapping[str, str],
    names: Sequence[str],
    *,
    required: bool,
) -> tuple[tuple[str | None, ...] | None, str | None]:
    """The mask files one table row names: ``(files, None)`` or ``(None, reason)``.

    Args:
        root: the data root the paths are relative to.
        row: the row's cells (text).
        columns: class or organ name → the column holding its mask path (a name without a
            column has an empty mask).
        names: class or organ names, in channel order.
        required: every name must have a file once one has (organs) or may lack one (classes:
            empty mask).

    Returns:
        ``files`` is ``None`` when every mask cell of the row is empty (not annotated), else one
        path per name (``None`` for an empty mask), as :func:`mask_files`.
    """
    files: list[str | None] = []
    for name in names:
        column = columns.get(name)
        if column is None or not row[column].strip():
            files.append(None)
            continue
        path, reason = relative_image_path(row[column], what="mask")
        if reason is not None:
            return None, f"column {column!r}: {reason}"
        if not (root / path).is_file():
            return None, f"column {column!r}: mask file {path} not found under the data root"
        files.append(str(root / path))
    if all(f is None for f in files):
        return None, None
    if required and None in files:
        empty = [columns[n] for n, f in zip(names, files, strict=True) if f is None]
        missing = [n for n, f in zip(names, files, strict=True) if f is None]
        return None, f"organ mask(s) {missing} missing: column(s) {empty} empty"
    return tuple(files), None


def withhold_labels(records: list[Record], fraction: float, seed: int) -> tuple[list[Record], int]:
    """``records`` with the train images of ``fraction`` of the train patients made unlabeled
    (labels all -1, the true ones withheld: ``prepare.<source>.unlabeled_fraction``), and how
    many patients lost theirs. The patients are chosen by
    :func:`~sibnet.data.splits.unlabeled_groups` with the split seed ``seed``."""
    train = [i for i, r in enumerate(records) if r.split == "train"]
    groups = np.array([records[i].patient_id for i in train], dtype=str)
    chosen = unlabeled_groups(groups, fraction, seed)
    records = list(records)
    for i, drop in zip(train, chosen, strict=True):
        if drop:
            record = records[i]
            records[i] = replace(
                record,
                labels=(-1,) * len(record.labels),
                labeled=False,
                withheld_labels=record.labels,
            )
    return records, len(set(groups[chosen].tolist()))
