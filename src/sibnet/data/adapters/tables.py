"""What the file-based adapters (CheXpert, folder) share: label tables, paths and mask files.

- **Label tables** are read with only the columns the pipeline needs (``usecols``): other
  columns — names, free text, dates, demographics — are never loaded, so they cannot reach an
  output, a log or MLflow. Every cell is read as text (blank → ``""``), so a value is judged
  exactly as written.
- **Image paths** in a table are relative to the data root, POSIX or Windows separators. An
  absolute path, or one whose ``..`` parts climb out of the root, is a problem of its row. The
  check is lexical (symbolic links inside the root are followed when reading, not judged).
- **Masks** lie in a mask folder as ``<image path without suffix>/<name>.png``: one file per
  class (lesion masks) or organ (segmentation masks). An image is annotated when its folder
  exists. In an annotated folder a missing class file is an empty mask (no lesion of that
  class); a missing organ file is a problem; a file that names no class or organ is a problem.
"""

from __future__ import annotations

import os
import posixpath
from collections.abc import Sequence
from pathlib import Path, PurePosixPath

import pandas as pd

from sibnet.data.problems import DataError, Problem

__all__ = [
    "MASK_SUFFIX",
    "find_duplicates",
    "mask_files",
    "read_table",
    "relative_image_path",
]

MASK_SUFFIX = ".png"


def read_table(path: Path, columns: Sequence[str], name: str) -> pd.DataFrame:
    """The ``columns`` of the CSV ``path`` as text (blank cells ``""``), in file order.

    Args:
        path: the CSV file.
        columns: the columns to read (all others are never loaded).
        name: how problems name the file (relative to the data root).

    Raises:
        DataError: the file is missing or unreadable, or lacks a column.
    """
    if not path.is_file():
        raise DataError([Problem(name, None, "label table not found")])
    try:
        header = pd.read_csv(path, nrows=0).columns.tolist()
    except (ValueError, UnicodeDecodeError, pd.errors.ParserError) as error:
        raise DataError([Problem(name, None, f"not a readable CSV file: {error}")]) from None
    missing = [c for c in columns if c not in header]
    if missing:
        raise DataError(
            [
                Problem(
                    name, None, f"missing column(s) {missing}; the table must have {list(columns)}"
                )
            ]
        )
    try:
        return pd.read_csv(
            path, usecols=list(columns), dtype=str, keep_default_na=False, na_filter=False
        )[list(columns)]
    except (ValueError, UnicodeDecodeError, pd.errors.ParserError) as error:
        raise DataError([Problem(name, None, f"not a readable CSV file: {error}")]) from None


def relative_image_path(raw: str) -> tuple[str | None, str | None]:
    """Normalise a table's image path: ``(POSIX path relative to the root, None)`` or
    ``(None, reason)`` when it is empty, absolute or escapes the root."""
    text = raw.strip().replace("\\", "/")
    if not text:
        return None, "the image path is empty"
    if text.startswith("/") or PurePosixPath(text).drive or (len(text) > 1 and text[1] == ":"):
        return None, f"image path {raw!r} is absolute; paths must be relative to the data root"
    normal = posixpath.normpath(text)
    if normal == ".." or normal.startswith("../"):
        return None, f"image path {raw!r} escapes the data root"
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
