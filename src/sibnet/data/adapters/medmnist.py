"""MedMNIST (v2/v3, 2D): one ``.npz`` file → the prepared layout, streamed block by block.

``prepare.medmnist.path`` names the file; it is read as it is and never downloaded. It holds
six arrays, ``<split>_images`` and ``<split>_labels`` for the splits train, val and test:

- images: uint8 ``(N, H, W)`` (greyscale) or ``(N, H, W, 3)`` (RGB: PathMNIST, DermaMNIST,
  BloodMNIST, ...); ``(N, H, W, 1)`` is read as greyscale;
- labels: integers ``(N, 1)`` (multi-class, and binary datasets such as PneumoniaMNIST or
  BreastMNIST) or ``(N, C)`` of 0/1 (multi-label: ChestMNIST's 14 findings); ``(N,)`` is read
  as ``(N, 1)``; float labels are accepted where their values are integers.

Both ``np.savez_compressed`` and plain ``np.savez`` files are read.

Decisions
---------
Task
    ``task: auto``: one label column → multi-class with ``C = max label + 1`` over all splits
    (at least 2, so binary datasets become two-class multi-class, one-hot); several columns →
    multi-label. An explicit task overrides: ``multilabel`` with one column is one binary label
    (values 0/1), ``multiclass`` with several columns needs one-hot rows (any other row is a
    problem of its row). ``classes`` names the classes (``null``: ``class_0`` ..
    ``class_{C-1}``); a number of names that differs from ``C`` is a problem naming both counts
    (with one label column ``C`` follows the data, so the names must match the labels that
    occur: a wrong list is reported once, not as a bad label on every row).
Splits and patients
    The splits are the file's own (train/val/test); ``prepare.split`` is not used. MedMNIST has
    no patient ids, so every image is its own patient (its patient id is its image id).
Ids and provenance
    Image ``i`` (0-based) of split ``s`` gets the id ``<s>-<i:06d>``, the source
    ``<file name>:<s>_images[<i>]`` and as ``source_sha256`` the SHA-256 of that image's bytes
    as stored in the file (C order). ``dataset.json``'s ``source`` records the file *name*
    and the SHA-256 of the whole file, the task, ``resize``, ``size`` and the number of rejected
    rows; the file's absolute path is written nowhere.
Images
    RGB becomes grey by the ITU-R 601-2 luma of Pillow's ``"L"`` conversion,
    ``L = R·299/1000 + G·587/1000 + B·114/1000``, computed exactly (integer numerator, one
    float64 division by 255 000, so the grey levels are not rounded to 8 bits first) and
    scaled to [0, 1]; greyscale is ``value / 255``. Each image is then brought to
    ``size`` × ``size`` by :func:`sibnet.data.images.fit_image` with ``resize`` (the same
    geometry as the other adapters; MedMNIST images are square, so ``pad``, ``stretch`` and
    ``crop`` agree) and quantised by :func:`sibnet.data.images.to_uint8`.
Bounded memory
    The images arrays are never loaded whole (``np.load`` is not used): the ``.npz`` is opened
    with :mod:`zipfile`, each member's ``.npy`` header is parsed
    (:func:`numpy.lib.format.read_magic`, ``read_array_header_1_0`` / ``_2_0``) and the images
    are read sequentially, at most :data:`BLOCK` rows (and about :data:`BLOCK_BYTES` bytes) at
    a time, and written shard by shard by :func:`sibnet.data.ingest.ingest`;
    the grey conversion and resizing work on one image at a time. Memory therefore holds one
    block of raw images and one shard (plus the manifest rows, which the writer keeps until
    it closes), whatever the file's size. Label arrays are small and read whole, by the same
    reader. Rows left out are still read (the members are sequential) but not written.
Problems
    Everything is checked before the first image is written and all problems are collected
    (:mod:`sibnet.data.problems`). ``Problem.file`` is the file name, with ``:<array>`` for a
    problem of one array; ``row`` is the 1-based index within the split (so row ``i + 1`` is
    image ``<s>-<i:06d>``), ``None`` for a problem of the whole file or array.

    A ``path`` that names no file is a configuration error, not a problem of the data: a
    :class:`~sibnet.config.ParamsError` naming ``prepare.medmnist.path`` (:func:`check_medmnist`,
    run by ``sibnet prepare`` before anything else).

    - *File problems* (fatal, even with ``skip_invalid``, which the error then does not
      suggest): not a zip/``.npz``
      or truncated (a broken archive, or a member shorter than its ``.npy`` header says,
      checked from the archive's directory before anything is written and again while
      reading); missing arrays; an array that is not a plain ``.npy`` (unknown format version,
      object dtype, Fortran order); 3D MedMNIST volumes (``(N, D, H, W)`` with ``W > 4``,
      or 5D images);
      images that are not uint8; labels whose count differs from the images'; label arrays
      with different numbers of columns; a one-column label over :data:`MAX_CLASSES` - 1; a
      ``classes`` list of the wrong length; an empty split (also one left empty once rows with
      problems are left out).
    - *Row problems* (skippable): a multi-class label that is not an integer class index
      ``0..C-1`` (negative or fractional); a multi-label value other than 0 or 1; a row that
      is not one-hot under an explicit ``task: multiclass``.

    Unless ``skip_invalid``, any problem raises :class:`~sibnet.data.problems.DataError`
    listing them all before anything is written. With ``skip_invalid`` the rows with problems
    are left out and listed in ``rejects.csv`` in the dataset folder. Damage that only shows
    while the images are read (a compressed member whose data or CRC is corrupt) raises
    ``DataError`` then; the caller's atomic folder discards what was written.
"""

from __future__ import annotations

import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import numpy as np
from numpy.lib import format as npy_format
from tqdm import tqdm

from sibnet.config import ParamsError, PrepareParams
from sibnet.data.images import fit_image, to_uint8
from sibnet.data.plan import Batch, Plan
from sibnet.data.problems import DataError, Problem
from sibnet.data.sources import Adapter, register_adapter
from sibnet.data.sources.medmnist import MedmnistParams
from sibnet.data.splits import SPLITS
from sibnet.files import sha256_bytes, sha256_file

__all__ = [
    "BLOCK",
    "BLOCK_BYTES",
    "KEYS",
    "MAX_CLASSES",
    "check_medmnist",
    "plan_medmnist",
]

BLOCK = 512
"""Images read from the file at a time (fewer when they are large, see :data:`BLOCK_BYTES`)."""

BLOCK_BYTES = 32 << 20
"""Upper bound (about) on the bytes of one block of raw images."""

KEYS: tuple[str, ...] = tuple(f"{s}_{kind}" for s in SPLITS for kind in ("images", "labels"))
"""The arrays a 2D MedMNIST ``.npz`` holds."""

MAX_CLASSES = 1000
"""Most classes a one-column (multi-class) label array may define (``max label + 1``)."""

_LUMA = (299, 587, 114)
"""ITU-R 601-2 luma weights (per mille) of R, G, B, as in Pillow's ``"L"`` conversion."""

_READ_ERRORS = (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError)
"""What reading a damaged archive member can raise."""


class _Truncated(ValueError):
    """A member ended before its ``.npy`` header's shape was read."""


@dataclass(frozen=True)
class _Array:
    """One ``.npy`` member of the archive, by its header.

    Attributes:
        key: the array's name (``train_images``).
        member: its name inside the zip (``train_images.npy``).
        shape: the array's shape.
        dtype: its element type.
        offset: bytes of ``.npy`` header before the data.
    """

    key: str
    member: str
    shape: tuple[int, ...]
    dtype: np.dtype
    offset: int

    @property
    def row_bytes(self) -> int:
        """Bytes of one row (one image, one label row)."""
        return int(np.prod(self.shape[1:], dtype=np.int64)) * self.dtype.itemsize


@dataclass
class _Checked:
    """What the checks found: arrays, decisions, problems.

    Attributes:
        images: the ``<split>_images`` headers that are usable, by split.
        labels: ``(N, C)`` int8 0/1 labels per split (rows with problems: zeros).
        keep: ``(N,)`` bool per split: the rows without problems.
        task: ``multiclass`` or ``multilabel``.
        classes: the class names.
        fatal: problems of the whole file (never skippable).
        rows: problems of single rows (skippable).
    """

    images: dict[str, _Array] = field(default_factory=dict)
    labels: dict[str, np.ndarray] = field(default_factory=dict)
    keep: dict[str, np.ndarray] = field(default_factory=dict)
    task: str = "multiclass"
    classes: list[str] = field(default_factory=list)
    fatal: list[Problem] = field(default_factory=list)
    rows: list[Problem] = field(default_factory=list)


def check_medmnist(params: PrepareParams) -> None:
    """Check that ``prepare.medmnist.path`` names a file (its content is checked on writing).

    Raises:
        ParamsError: it does not; the message names the key and the path.
    """
    path = Path(params.medmnist.path or "").expanduser()
    if not path.is_file():
        found = "is not a file" if path.exists() else "not found"
        raise ParamsError(
            f"prepare.medmnist.path = {params.medmnist.path!r}: {found} (a configuration error: "
            "nothing was read); set it to a 2D MedMNIST .npz file"
        )


def plan_medmnist(params: PrepareParams) -> Plan:
    """Check the MedMNIST ``.npz`` at ``params.medmnist.path`` into an array plan.

    See the module docstring for the decisions. Every array header and label is read and
    checked here (no image is); the plan's batches then stream the images of the rows without
    problems, block by block, split after split.

    Args:
        params: the ``prepare`` section (``dataset``, ``size``, ``resize``, ``medmnist.path``,
            ``medmnist.task``, ``medmnist.classes``).

    Returns:
        The plan: its ``problems`` are those of single rows (skippable), its ``fatal`` those of
        the whole file and any split that leaving the rows out would empty.

    Raises:
        ParamsError: ``prepare.medmnist.path`` names no file (:func:`check_medmnist`).
        DataError: the file is not a readable zip archive at all.
    """
    check_medmnist(params)
    path = Path(params.medmnist.path or "").expanduser()
    name = path.name
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as error:
        raise DataError(
            [Problem(name, None, f"not a readable .npz (zip) file, or truncated: {error}")],
            skippable=False,
        ) from None
    with archive:
        checked = _check(archive, name, params)
    fatal = list(checked.fatal)
    if not fatal:
        fatal = [
            Problem(
                f"{name}:{split}_labels",
                None,
                f"every row of the {split} split has problems, so the split would be empty; "
                "every split needs at least one image",
            )
            for split in SPLITS
            if not checked.keep[split].any()
        ]
    size = params.size

    def batches() -> Iterator[Batch]:
        total = sum(int(keep.sum()) for keep in checked.keep.values())
        with (
            zipfile.ZipFile(path) as archive,
            tqdm(total=total, unit="img", desc="medmnist", disable=None) as progress,
        ):
            for split in SPLITS:
                yield from _split_batches(archive, name, split, checked, params, progress)

    return Plan(
        name=params.dataset,
        task=checked.task,
        classes=checked.classes,
        organs=[],
        problems=checked.rows,
        fatal=fatal,
        source={
            "adapter": "medmnist",
            "file": name,
            "file_sha256": sha256_file(path) if not fatal else None,
            "task": checked.task,
            "resize": params.resize,
            "size": size,
            "rejected_rows": len(checked.rows),
        },
        batches=batches,
        image_size=(size, size),
    )


def _split_batches(
    archive: zipfile.ZipFile,
    name: str,
    split: str,
    checked: _Checked,
    params: PrepareParams,
    progress: tqdm,
) -> Iterator[Batch]:
    """The kept images of one split, a block at a time."""
    array = checked.images[split]
    keep = checked.keep[split]
    size = (params.size, params.size)
    for start, block in _blocks(archive, name, array):
        rows = np.flatnonzero(keep[start : start + len(block)])
        if not len(rows):
            continue
        images = np.stack([to_uint8(fit_image(_grey(block[r]), size, params.resize)) for r in rows])
        indices = (start + rows).tolist()
        ids = [f"{split}-{i:06d}" for i in indices]
        yield Batch(
            images=images[:, None],
            labels=checked.labels[split][start + rows],
            ids=ids,
            splits=[split] * len(ids),
            patient_ids=ids,
            sources=[f"{name}:{array.key}[{i}]" for i in indices],
            source_sha256=[sha256_bytes(block[r].tobytes()) for r in rows],
        )
        progress.update(len(rows))


def _grey(image: np.ndarray) -> np.ndarray:
    """One raw image → grey in [0, 1].

    Args:
        image: uint8 ``(H, W)``, ``(H, W, 1)`` or ``(H, W, 3)`` (RGB).

    Returns:
        ``(H, W)`` float32: ``value / 255``, or the ITU-R 601-2 luma of RGB / 255 (exact
        integer numerator, one float64 division, then float32).
    """
    if image.ndim == 3 and image.shape[2] == 3:
        luma = np.multiply(image[..., 0], _LUMA[0], dtype=np.int32)
        luma += np.multiply(image[..., 1], _LUMA[1], dtype=np.int32)
        luma += np.multiply(image[..., 2], _LUMA[2], dtype=np.int32)
        return (luma / 255_000.0).astype(np.float32)
    return image.reshape(image.shape[:2]).astype(np.float32) / np.float32(255)


# --------------------------------------------------------------------------- reading


def _header(archive: zipfile.ZipFile, name: str, key: str, member: str) -> _Array | Problem:
    """Parse a member's ``.npy`` header and check its size against the archive's directory."""
    where = f"{name}:{key}"
    try:
        with archive.open(member) as handle:
            version = npy_format.read_magic(handle)
            if version == (1, 0):
                shape, fortran, dtype = npy_format.read_array_header_1_0(handle)
            elif version == (2, 0):
                shape, fortran, dtype = npy_format.read_array_header_2_0(handle)
            else:
                return Problem(where, None, f".npy format version {version} is not supported")
            offset = handle.tell()
    except _READ_ERRORS as error:
        return Problem(where, None, f"not a readable .npy array (damaged or truncated): {error}")
    if fortran:
        return Problem(where, None, "Fortran-ordered array not supported (C order only)")
    if dtype.hasobject:
        return Problem(where, None, f"dtype {dtype} holds Python objects; not supported")
    array = _Array(key, member, tuple(int(n) for n in shape), dtype, offset)
    expected = offset + (array.shape[0] if array.shape else 1) * array.row_bytes
    stored = archive.getinfo(member).file_size
    if stored < expected:
        return Problem(
            where,
            None,
            f"truncated: the member holds {stored} bytes, but its header ({dtype} "
            f"{list(array.shape)}) needs {expected}",
        )
    return array


def _rows(handle: IO[bytes], array: _Array, count: int) -> np.ndarray:
    """Read the next ``count`` rows of ``array`` from ``handle`` (read-only, C order)."""
    wanted = count * array.row_bytes
    data = handle.read(wanted)
    if len(data) < wanted:
        raise _Truncated(f"the data ends {wanted - len(data)} bytes early")
    return np.frombuffer(data, dtype=array.dtype).reshape(count, *array.shape[1:])


def _open(archive: zipfile.ZipFile, array: _Array) -> IO[bytes]:
    """Open ``array``'s member positioned at its first row."""
    handle = archive.open(array.member)
    handle.read(array.offset)
    return handle


def _blocks(archive: zipfile.ZipFile, name: str, array: _Array) -> Iterator[tuple[int, np.ndarray]]:
    """Yield ``(start, block)``: consecutive blocks of rows of ``array``, in order.

    ``block`` is ``(k, *shape[1:])``, ``k`` ≤ :data:`BLOCK`. A member that turns out damaged
    or short raises :class:`DataError`.
    """
    per_block = max(1, min(BLOCK, BLOCK_BYTES // max(1, array.row_bytes)))
    total = array.shape[0]
    try:
        with _open(archive, array) as handle:
            for start in range(0, total, per_block):
                yield start, _rows(handle, array, min(per_block, total - start))
    except (*_READ_ERRORS, _Truncated) as error:
        raise DataError(
            [Problem(f"{name}:{array.key}", None, f"damaged or truncated data: {error}")],
            skippable=False,
        ) from None


def _read_whole(archive: zipfile.ZipFile, name: str, array: _Array) -> np.ndarray | Problem:
    """All rows of a (small) array, read like the images."""
    try:
        with _open(archive, array) as handle:
            return _rows(handle, array, array.shape[0])
    except (*_READ_ERRORS, _Truncated) as error:
        return Problem(f"{name}:{array.key}", None, f"damaged or truncated data: {error}")


# --------------------------------------------------------------------------- checks


def _check(archive: zipfile.ZipFile, name: str, params: PrepareParams) -> _Checked:
    """Check the archive's arrays and labels; decide task and classes (nothing is written)."""
    checked = _Checked()
    members = set(archive.namelist())
    found = {key: next((m for m in (f"{key}.npy", key) if m in members), None) for key in KEYS}
    missing = [key for key, member in found.items() if member is None]
    if missing:
        checked.fatal.append(
            Problem(
                name,
                None,
                f"missing array(s) {missing}; a 2D MedMNIST .npz holds {list(KEYS)} "
                "(images uint8 (N, H, W) or (N, H, W, 3); labels (N, 1) or (N, C))",
            )
        )
    arrays: dict[str, _Array] = {}
    raw: dict[str, np.ndarray] = {}
    for split in SPLITS:  # in file order, so that the problems are too
        for kind in ("images", "labels"):
            key = f"{split}_{kind}"
            member = found[key]
            if member is None:
                continue
            array = _header(archive, name, key, member)
            if isinstance(array, Problem):
                checked.fatal.append(array)
                continue
            arrays[key] = array
            if kind == "images":
                problem = _image_problem(name, array)
                if problem is None:
                    checked.images[split] = array
            else:
                problem = _labels_problem(name, array, arrays.get(f"{split}_images"))
                if problem is None:
                    values = _read_whole(archive, name, array)
                    if isinstance(values, Problem):
                        problem = values
                    else:
                        columns = array.shape[1] if len(array.shape) == 2 else 1
                        raw[split] = values.reshape(len(values), columns)
            if problem is not None:
                checked.fatal.append(problem)
    for split in SPLITS:
        present = [arrays.get(f"{split}_{kind}") for kind in ("images", "labels")]
        counts = [a.shape[0] for a in present if a is not None and a.shape]
        if counts and max(counts) == 0:
            checked.fatal.append(
                Problem(
                    f"{name}:{split}_images",
                    None,
                    f"the {split} split is empty; every split needs at least one image",
                )
            )
    _check_labels(name, params, raw, checked)
    return checked


def _image_problem(name: str, array: _Array) -> Problem | None:
    """Why an images array cannot be used (``None``: it can)."""
    where = f"{name}:{array.key}"
    shape = array.shape
    if len(shape) == 5 or (len(shape) == 4 and shape[3] > 4):
        return Problem(
            where,
            None,
            f"images of shape {list(shape)}: 3D MedMNIST volumes are not supported (2D only)",
        )
    if not (len(shape) == 3 or (len(shape) == 4 and shape[3] in (1, 3))):
        return Problem(
            where,
            None,
            f"images of shape {list(shape)}; accepted: (N, H, W) greyscale or (N, H, W, 3) RGB",
        )
    if array.dtype != np.uint8:
        return Problem(where, None, f"images are {array.dtype}; accepted: uint8")
    if shape[1] < 1 or shape[2] < 1:
        return Problem(where, None, f"images of shape {list(shape)} have no pixels")
    return None


def _labels_problem(name: str, array: _Array, images: _Array | None) -> Problem | None:
    """Why a labels array cannot be used with its ``images`` (``None``: it can)."""
    where = f"{name}:{array.key}"
    if len(array.shape) not in (1, 2) or (len(array.shape) == 2 and array.shape[1] < 1):
        return Problem(
            where, None, f"labels of shape {list(array.shape)}; accepted: (N, 1) or (N, C)"
        )
    if array.dtype.kind not in "biuf":
        return Problem(where, None, f"labels are {array.dtype}; accepted: integers")
    if images is not None and images.shape and images.shape[0] != array.shape[0]:
        return Problem(
            where, None, f"{array.shape[0]} labels for {images.shape[0]} images in {images.key}"
        )
    return None


def _check_labels(
    name: str, params: PrepareParams, raw: dict[str, np.ndarray], checked: _Checked
) -> None:
    """Decide task, classes and one-hot/0-1 labels; record problems in ``checked``.

    Args:
        raw: the labels read, ``(N, K)`` per split (splits whose labels are unusable absent).
    """
    columns = {split: values.shape[1] for split, values in raw.items()}
    if len(set(columns.values())) > 1:
        checked.fatal.append(
            Problem(
                name,
                None,
                "the label arrays have different numbers of columns: "
                + ", ".join(f"{split}_labels {k}" for split, k in columns.items()),
            )
        )
        return
    width = next(iter(columns.values()), 1)
    task = params.medmnist.task
    if task == "auto":
        task = "multiclass" if width == 1 else "multilabel"
    checked.task = task
    values = {split: v.astype(np.float64) for split, v in raw.items()}
    binary = {split: ((v == 0) | (v == 1)).all(axis=1) for split, v in values.items()}
    if task == "multiclass" and width == 1:
        index = {
            split: np.isfinite(v[:, 0]) & (v[:, 0] >= 0) & (v[:, 0] == np.round(v[:, 0]))
            for split, v in values.items()
        }
        largest = max(
            (int(v[index[s], 0].max()) for s, v in values.items() if index[s].any()), default=0
        )
        n_classes = max(2, largest + 1)
        if n_classes > MAX_CLASSES:
            checked.fatal.append(
                Problem(
                    name,
                    None,
                    f"the largest label, {largest}, would make {n_classes} classes; at most "
                    f"{MAX_CLASSES} are supported (a damaged label?)",
                )
            )
            return
        valid = index
        reason = f"is not a class index; accepted: integers 0..{n_classes - 1}"
    elif task == "multiclass":
        n_classes = width
        valid = {s: binary[s] & (values[s].sum(axis=1) == 1) for s in values}
        reason = "is not one-hot; multiclass needs exactly one 1 per row, the rest 0"
    else:
        n_classes = width
        valid = binary
        reason = "must be 0 or 1 (multi-label)"

    if params.medmnist.classes is None:
        checked.classes = [f"class_{i}" for i in range(n_classes)]
    else:
        checked.classes = list(params.medmnist.classes)
        if len(checked.classes) != n_classes:
            checked.fatal.append(
                Problem(
                    name,
                    None,
                    f"prepare.medmnist.classes names {len(checked.classes)} classes, but the "
                    f"labels have {n_classes} ({task}, {width} label column(s))",
                )
            )

    for split in SPLITS:
        if split not in values:
            checked.keep[split] = np.zeros(0, bool)
            continue
        v = values[split]
        ok = valid[split]
        for row in np.flatnonzero(~ok).tolist():
            shown = [_show(x) for x in v[row]]
            what = f"label {shown[0]}" if width == 1 else f"labels {shown}"
            checked.rows.append(Problem(f"{name}:{split}_labels", row + 1, f"{what} {reason}"))
        if task == "multiclass" and width == 1:
            onehot = np.zeros((len(v), n_classes), np.int8)
            rows = np.flatnonzero(ok)
            onehot[rows, v[rows, 0].astype(np.int64)] = 1
        else:
            onehot = np.where(ok[:, None], v, 0).astype(np.int8)
        checked.labels[split] = onehot
        checked.keep[split] = ok


def _show(value: float) -> int | float:
    """A label value as written in a problem: an int when it is one."""
    return int(value) if np.isfinite(value) and value == round(value) else float(value)


register_adapter("medmnist", Adapter(MedmnistParams, plan_medmnist, check_medmnist))
