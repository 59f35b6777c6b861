"""The prepared-dataset layout every adapter writes and every later stage reads.

A prepared dataset is one folder::

    <dataset>/
      dataset.json                   what it is: task, classes, organs, image size, shards + hashes
      manifest.parquet               one row per image (see MANIFEST_COLUMNS)
      images/shard-00000.npy         (n, 1, H, W) uint8, memory-mappable
      lesion_masks/shard-00000.npy   (n, C, H, ⌈W/8⌉) uint8: per-class lesion masks (saliency truth)
      organ_masks/shard-00000.npy    (n, K, H, ⌈W/8⌉) uint8: organ masks (segmentation targets)
      withheld_labels.parquet        the true labels of unlabeled images (see below), if any

Images are stored as 8-bit grey levels (like a PNG export) and read back as float32 in [0, 1].
Masks are stored bit-packed along the last axis (``numpy.packbits``; 8× smaller, mostly empty)
and read back as bool ``(n, C, H, W)``.
Mask shards exist only when the source has masks; a row's ``has_*_masks`` flag says whether its
masks are annotated (an unannotated row's stored masks are empty).
Labels are 1 (positive) or 0 (negative); in multi-label tasks a train or val label may be -1,
*unknown* (CheXpert's U-Ignore policy): it is masked out of the loss and of the metrics. Test
labels are always known. :meth:`PreparedDataset.open` checks that manifest, ``dataset.json`` and the
arrays agree (and, with ``verify``, that every shard still has its recorded SHA-256) and names
the file and row at fault otherwise.

**Unlabeled images** (semi-supervised training: saliency terms that need no label can use
them). Some training images may be *unlabeled*: their labels are not for training. The
manifest then has the optional column ``labeled`` (:data:`OPTIONAL_COLUMNS`), false for those
rows; like the mask shards it exists only when needed (absent: every image is labeled, and
the files are byte for byte those of a dataset written before the column existed). An
unlabeled image is always in split ``train`` (it counts in ``split_counts["train"]``); its
stored ``labels`` are all -1, placeholders, never a label, in either task.
:meth:`PreparedDataset.indices` gives a split's *labeled* images only;
:meth:`PreparedDataset.unlabeled_indices` the unlabeled ones. ``dataset.json`` then has the key
``unlabeled``: ``images`` (how many), ``withheld_labels`` (how many of them have withheld
labels), ``origin`` (which params made them unlabeled) and, when some labels are withheld,
``withheld_labels_file`` (path and SHA-256, checked by ``open(verify=True)``).

Withheld labels: where a source drops labels that exist (the phantom's extra images, a
fraction of the train patients), the true labels are not thrown away but kept apart, in
``withheld_labels.parquet`` (``id``, ``labels`` as list<int8>, the unlabeled rows that have
them in manifest order), so that the study's upper bound — the same training with every image
labeled — is trained from the same prepared dataset in the same DAG. They are outside the
manifest so that no reader of labels meets them by accident: :meth:`PreparedDataset.open`
checks the file against the manifest, and only :meth:`PreparedDataset.withheld_labels` hands
them out (training asks for them only for a method with ``unlabeled: oracle``). Images that
come unlabeled (a folder's ``unlabeled_csv``) have no withheld labels.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from sibnet.data.images import to_uint8
from sibnet.data.splits import SPLITS
from sibnet.errors import SibnetError
from sibnet.files import sha256_bytes, sha256_file, write_json

__all__ = [
    "FORMAT",
    "MANIFEST_COLUMNS",
    "OPTIONAL_COLUMNS",
    "WITHHELD_LABELS",
    "PreparedDataset",
    "PreparedError",
    "PreparedWriter",
]

FORMAT = "sibnet-prepared/2"
MANIFEST_COLUMNS: dict[str, str] = {
    "id": "unique image id",
    "split": "train, val or test",
    "patient_id": "patient the image belongs to (splits never divide a patient)",
    "labels": "list per class, in dataset.json's class order: 1 positive, 0 negative, "
    "-1 unknown (multi-label train/val only: masked out of the loss and the metrics)",
    "shard": "shard number of the image and its masks",
    "row": "row inside the shard",
    "has_lesion_masks": "whether the per-class lesion masks are annotated",
    "has_organ_masks": "whether the organ masks are annotated",
    "source": "where the image came from (path relative to the data root, or coordinates)",
    "source_sha256": "SHA-256 of the source file's bytes (array sources: of the image's bytes)",
    "content_hash": "SHA-256 of the stored image and mask bytes",
}
OPTIONAL_COLUMNS: dict[str, str] = {
    "labeled": "whether the image's labels are for training; false: an unlabeled image (train "
    "only, labels all -1 placeholders). Written only when some image is unlabeled; absent: "
    "every image is labeled",
}
"""Manifest columns that exist only when needed (after :data:`MANIFEST_COLUMNS`)."""
WITHHELD_LABELS = "withheld_labels.parquet"
"""The file of the labels withheld from unlabeled images (see the module docstring)."""
_ARRAYS = ("images", "lesion_masks", "organ_masks")
_WITHHELD = "_withheld"
"""The writer's in-memory column of each row's withheld labels (``None``: none); never stored."""


class PreparedError(ValueError, SibnetError):
    """A prepared dataset is missing, incomplete or inconsistent; the message names the file."""


def _store_shard(
    root: Path,
    index: int,
    images: np.ndarray,
    lesion_masks: np.ndarray | None = None,
    organ_masks: np.ndarray | None = None,
) -> tuple[dict[str, Any], list[str]]:
    """Write one shard's arrays under ``root`` (``<kind>/shard-<index>.npy``).

    Args:
        root: the dataset folder being written.
        index: the shard number (its file name).
        images: ``(n, 1, H, W)`` uint8.
        lesion_masks: ``(n, C, H, W)`` bool, or ``None`` when the dataset has none.
        organ_masks: ``(n, K, H, W)`` bool, or ``None`` when the dataset has none.

    Returns:
        The shard's ``dataset.json`` entry (rows, and path + SHA-256 of each array file) and the
        ``n`` per-image content hashes (SHA-256 of the image's and its masks' stored bytes).
    """
    if images.dtype != np.uint8 or images.ndim != 4:
        raise ValueError(f"images must be uint8 (n, 1, H, W), got {images.dtype}{images.shape}")
    root = Path(root)
    arrays = {
        "images": images,
        "lesion_masks": None if lesion_masks is None else np.packbits(lesion_masks, axis=-1),
        "organ_masks": None if organ_masks is None else np.packbits(organ_masks, axis=-1),
    }
    shard: dict[str, Any] = {"rows": len(images)}
    for key, array in arrays.items():
        if array is None:
            continue
        if len(array) != len(images):
            raise ValueError(f"{key}: {len(array)} rows for {len(images)} images")
        relative = f"{key}/shard-{index:05d}.npy"
        (root / key).mkdir(parents=True, exist_ok=True)
        np.save(root / relative, np.ascontiguousarray(array), allow_pickle=False)
        shard[key] = {"path": relative, "sha256": sha256_file(root / relative)}
    hashes = [
        sha256_bytes(*(arrays[k][i].tobytes() for k in _ARRAYS if arrays[k] is not None))
        for i in range(len(images))
    ]
    return shard, hashes


def _write_index(
    root: Path,
    manifest: pd.DataFrame,
    shards: list[dict[str, Any]],
    *,
    name: str,
    task: str,
    classes: Sequence[str],
    organs: Sequence[str],
    image_size: tuple[int, int],
    source: dict[str, Any],
    unlabeled_origin: str | None = None,
) -> pd.DataFrame:
    """Write ``manifest.parquet`` and ``dataset.json`` for shards already stored under ``root``.

    ``manifest`` holds every :data:`MANIFEST_COLUMNS` column (``labels`` as lists) and maybe
    more; the documented columns come first, in order, then ``labeled`` when some row is
    unlabeled (dropped when every row is labeled). Its column ``_withheld`` (each row's
    withheld labels or ``None``), if any, goes to :data:`WITHHELD_LABELS` instead; an unlabeled
    row needs ``unlabeled_origin`` (``dataset.json``'s ``unlabeled.origin``). Returns the
    manifest as written.
    """
    missing = [c for c in MANIFEST_COLUMNS if c not in manifest.columns]
    if missing:
        raise ValueError(f"manifest lacks column(s) {missing}")
    manifest = manifest[
        list(MANIFEST_COLUMNS) + [c for c in manifest.columns if c not in MANIFEST_COLUMNS]
    ].reset_index(drop=True)
    withheld = (
        manifest.pop(_WITHHELD).tolist()
        if _WITHHELD in manifest.columns
        else [None] * len(manifest)
    )
    labeled = labeled_flags(manifest)
    manifest = manifest.drop(columns=["labeled"], errors="ignore")
    if not labeled.all():  # written only when needed: all-labeled datasets are as before
        manifest.insert(len(MANIFEST_COLUMNS), "labeled", labeled)
    kept = [i for i, labels in enumerate(withheld) if labels is not None]
    if any(labeled[i] for i in kept):
        raise ValueError("withheld labels given for a labeled image")
    manifest["shard"] = manifest["shard"].astype(np.int32)
    manifest["row"] = manifest["row"].astype(np.int32)
    # plain lists of ints, however the rows came (a part's manifest reads back int8 arrays), so
    # that the parquet file's pandas metadata is the same whichever way a dataset was written
    manifest["labels"] = [np.asarray(v).tolist() for v in manifest["labels"]]
    table = pa.Table.from_pandas(manifest, preserve_index=False)
    table = table.set_column(
        table.schema.get_field_index("labels"),
        "labels",
        pa.array([list(v) for v in manifest["labels"]], type=pa.list_(pa.int8())),
    )
    pq.write_table(table, Path(root) / "manifest.parquet", compression="zstd")
    counts = manifest.groupby("split").size().to_dict()
    unlabeled: dict[str, Any] = {}
    if not labeled.all():
        if not unlabeled_origin:
            raise ValueError("unlabeled images need an origin (what made them unlabeled)")
        unlabeled = {
            "unlabeled": {
                "images": int((~labeled).sum()),
                "withheld_labels": len(kept),
                "origin": unlabeled_origin,
            }
        }
    if kept:
        pq.write_table(
            pa.table(
                {
                    "id": pa.array(manifest["id"].iloc[kept].tolist(), type=pa.string()),
                    "labels": pa.array(
                        [np.asarray(withheld[i]).tolist() for i in kept], type=pa.list_(pa.int8())
                    ),
                }
            ),
            Path(root) / WITHHELD_LABELS,
            compression="zstd",
        )
        unlabeled["unlabeled"]["withheld_labels_file"] = {
            "path": WITHHELD_LABELS,
            "sha256": sha256_file(Path(root) / WITHHELD_LABELS),
        }
    write_json(
        Path(root) / "dataset.json",
        {
            "format": FORMAT,
            "name": name,
            "task": task,
            "classes": list(classes),
            "organs": list(organs),
            "image_size": list(image_size),
            "channels": 1,
            "image_dtype": "uint8",
            "mask_encoding": "packbits(axis=-1)",
            "num_images": len(manifest),
            "split_counts": {s: int(counts.get(s, 0)) for s in SPLITS},
            "shards": shards,
            "manifest_sha256": sha256_file(Path(root) / "manifest.parquet"),
            "source": source,
            **unlabeled,
        },
    )
    return manifest


@dataclass
class PreparedWriter:
    """Write a prepared dataset shard by shard (bounded memory), then its manifest: the one way
    a prepared dataset is written.

    Call :meth:`add` with consecutive batches (full shards of ``shard_size`` rows are written
    as they fill) and/or :meth:`append` with finished prepared datasets whose shards are taken
    over whole, then :meth:`close`. The writer writes into ``root`` directly: callers wrap it in
    :func:`sibnet.files.atomic_dir`. ``lesion_masks`` says whether the dataset stores per-class
    lesion masks; organ masks are stored when ``organs`` is not empty. A batch without masks of
    a kind the dataset stores gets empty masks and ``has_*_masks`` false. Rows added (or
    appended) unlabeled make the dataset one with unlabeled images (see the module docstring);
    ``unlabeled_origin`` then says what made them unlabeled (``dataset.json``'s
    ``unlabeled.origin``).
    """

    root: Path
    name: str
    task: str
    classes: Sequence[str]
    organs: Sequence[str]
    image_size: tuple[int, int]
    shard_size: int
    lesion_masks: bool = False
    source: dict[str, Any] = field(default_factory=dict)
    unlabeled_origin: str | None = None
    _rows: list[pd.DataFrame] = field(default_factory=list, init=False)
    _shards: list[dict[str, Any]] = field(default_factory=list, init=False)
    _pending: list[dict[str, Any]] = field(default_factory=list, init=False)
    _pending_rows: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        if self.task not in ("multiclass", "multilabel"):
            raise ValueError(f"task must be 'multiclass' or 'multilabel', got {self.task!r}")
        self.root = Path(self.root)

    def add(
        self,
        *,
        images: np.ndarray,
        labels: np.ndarray,
        ids: Sequence[str],
        splits: Sequence[str],
        patient_ids: Sequence[str],
        sources: Sequence[str],
        source_sha256: Sequence[str] | None = None,
        lesion_masks: np.ndarray | None = None,
        organ_masks: np.ndarray | None = None,
        extra: dict[str, Sequence[Any]] | None = None,
        labeled: Sequence[bool] | None = None,
        withheld_labels: Sequence[Sequence[int] | None] | None = None,
    ) -> None:
        """Queue a batch of images.

        Args:
            images: ``(n, 1, H, W)`` float in [0, 1], or uint8 grey levels.
            labels: ``(n, C)`` 1/0 (or -1: unknown, see :data:`MANIFEST_COLUMNS`); all -1 in
                an unlabeled row.
            ids, splits, patient_ids, sources: ``n`` strings each.
            source_sha256: ``n`` hashes of the sources; ``None``: of the stored images' bytes.
            lesion_masks: ``(n, C, H, W)`` bool, or ``None`` (not annotated).
            organ_masks: ``(n, K, H, W)`` bool, or ``None`` (not annotated).
            extra: further manifest columns, ``n`` values each.
            labeled: ``n`` flags, false for an unlabeled image (split ``train`` only);
                ``None``: every image labeled.
            withheld_labels: ``n`` entries, each the ``C`` true labels withheld from an
                unlabeled image, or ``None`` (none; always for a labeled image); ``None``: none.
        """
        n = len(images)
        height, width = self.image_size
        expected = (n, 1, height, width)
        if images.shape != expected:
            raise ValueError(f"images must have shape {expected}, got {images.shape}")
        if labels.shape != (n, len(self.classes)):
            raise ValueError(f"labels must have shape {(n, len(self.classes))}, got {labels.shape}")
        flags = [True] * n if labeled is None else [bool(v) for v in labeled]
        withheld = [None] * n if withheld_labels is None else list(withheld_labels)
        if len(flags) != n or len(withheld) != n:
            raise ValueError(f"labeled and withheld_labels must have {n} entries each")
        for i in range(n):
            if flags[i] and withheld[i] is not None:
                raise ValueError(f"image {ids[i]!r}: withheld labels given for a labeled image")
            if not flags[i] and (splits[i] != "train" or (labels[i] != -1).any()):
                raise ValueError(
                    f"image {ids[i]!r}: an unlabeled image must be in split 'train' with "
                    f"labels all -1, got {splits[i]!r} and {labels[i].tolist()}"
                )
            if withheld[i] is not None:
                withheld[i] = np.asarray(withheld[i], dtype=np.int8).tolist()
                if len(withheld[i]) != len(self.classes):
                    raise ValueError(
                        f"image {ids[i]!r}: {len(withheld[i])} withheld labels for "
                        f"{len(self.classes)} classes"
                    )
        stored = images if images.dtype == np.uint8 else to_uint8(images)
        masks: dict[str, np.ndarray | None] = {}
        annotated: dict[str, bool] = {}
        for key, given, channels, kept in (
            ("lesion_masks", lesion_masks, len(self.classes), self.lesion_masks),
            ("organ_masks", organ_masks, len(self.organs), bool(self.organs)),
        ):
            if given is not None and not kept:
                raise ValueError(f"{key} given, but this dataset does not store them")
            annotated[key] = given is not None
            masks[key] = (
                None
                if not kept
                else np.zeros((n, channels, height, width), bool)
                if given is None
                else given.astype(bool)
            )
        self._pending.append(
            {
                "images": stored,
                **masks,
                "columns": {
                    "id": list(ids),
                    "split": list(splits),
                    "patient_id": list(patient_ids),
                    "labels": [row.astype(np.int8).tolist() for row in labels],
                    "has_lesion_masks": [annotated["lesion_masks"]] * n,
                    "has_organ_masks": [annotated["organ_masks"]] * n,
                    "source": list(sources),
                    "source_sha256": list(source_sha256)
                    if source_sha256 is not None
                    else [sha256_bytes(image.tobytes()) for image in stored],
                    **(extra or {}),
                    "labeled": flags,
                    _WITHHELD: withheld,
                },
            }
        )
        self._pending_rows += n
        while self._pending_rows >= self.shard_size:
            self._flush(self.shard_size)

    def _flush(self, n: int) -> None:
        """Write the first ``n`` pending rows as one shard; keep the rest pending."""
        merged: dict[str, Any] = {
            key: None
            if self._pending[0][key] is None
            else np.concatenate([b[key] for b in self._pending])
            for key in _ARRAYS
        }
        columns = {
            key: [value for b in self._pending for value in b["columns"][key]]
            for key in self._pending[0]["columns"]
        }
        index = len(self._shards)
        shard, hashes = _store_shard(
            self.root, index, *(None if a is None else a[:n] for a in merged.values())
        )
        self._shards.append(shard)
        frame = pd.DataFrame({key: values[:n] for key, values in columns.items()})
        frame["shard"] = index
        frame["row"] = np.arange(n)
        frame["content_hash"] = hashes
        self._rows.append(frame)
        self._pending_rows -= n
        self._pending = []
        if self._pending_rows:
            rest = {key: None if a is None else a[n:] for key, a in merged.items()}
            rest["columns"] = {key: values[n:] for key, values in columns.items()}
            self._pending = [rest]

    def append(self, part: Path) -> None:
        """Take over the shards and manifest rows of the prepared dataset ``part`` (same
        classes, organs, masks and image size), after those written so far.

        The shard files are hard-linked (copied across file systems), not rewritten: their
        recorded hashes and the rows' content hashes stay valid. ``part`` is left as it was.
        """
        if self._pending_rows:
            raise ValueError("append() after add(): end the added rows' shard first")
        part = Path(part)
        meta = json.loads((part / "dataset.json").read_text(encoding="utf-8"))
        mine = {
            "task": self.task,
            "classes": list(self.classes),
            "organs": list(self.organs),
            "image_size": list(self.image_size),
        }
        theirs = {key: meta[key] for key in mine}
        if theirs != mine:
            raise ValueError(f"{part}: {theirs} differs from this dataset's {mine}")
        frame = pq.read_table(part / "manifest.parquet").to_pandas()
        if "labeled" not in frame.columns:
            frame["labeled"] = True
        withheld: dict[str, list[int]] = {}
        if "withheld_labels_file" in meta.get("unlabeled", {}):
            table = pq.read_table(part / meta["unlabeled"]["withheld_labels_file"]["path"])
            withheld = dict(zip(table["id"].to_pylist(), table["labels"].to_pylist(), strict=True))
        frame[_WITHHELD] = [withheld.get(i) for i in frame["id"]]
        numbers = {}
        for old, shard in enumerate(meta["shards"]):
            number = len(self._shards)
            numbers[old] = number
            entry: dict[str, Any] = {"rows": shard["rows"]}
            for key in _ARRAYS:
                if key in shard:
                    relative = f"{key}/shard-{number:05d}.npy"
                    (self.root / key).mkdir(parents=True, exist_ok=True)
                    _link_or_copy(part / shard[key]["path"], self.root / relative)
                    entry[key] = {"path": relative, "sha256": shard[key]["sha256"]}
            self._shards.append(entry)
        frame["shard"] = frame["shard"].map(numbers)
        self._rows.append(frame)

    def close(self) -> pd.DataFrame:
        """Write the last shard, ``manifest.parquet`` and ``dataset.json``; return the manifest."""
        if self._pending_rows:
            self._flush(self._pending_rows)
        if not self._rows:
            raise ValueError("no images were added")
        return _write_index(
            self.root,
            pd.concat(self._rows, ignore_index=True),
            self._shards,
            name=self.name,
            task=self.task,
            classes=self.classes,
            organs=self.organs,
            image_size=self.image_size,
            source=self.source,
            unlabeled_origin=self.unlabeled_origin,
        )


def _link_or_copy(source: Path, target: Path) -> None:
    """Hard-link ``source`` to ``target`` (copy across file systems)."""
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)


class PreparedDataset:
    """A validated, memory-mapped prepared dataset (see the module docstring for the layout)."""

    def __init__(self, root: Path, meta: dict[str, Any], manifest: pd.DataFrame) -> None:
        self.root = root
        self.meta = meta
        self.manifest = manifest
        self.classes: list[str] = list(meta["classes"])
        self.organs: list[str] = list(meta["organs"])
        self.task: str = meta["task"]
        self.image_size: tuple[int, int] = tuple(meta["image_size"])  # type: ignore[assignment]
        self.labels = np.array(manifest["labels"].tolist(), dtype=np.int8).reshape(
            len(manifest), len(self.classes)
        )
        self._labeled = labeled_flags(manifest).copy()
        self._labeled.flags.writeable = False
        self._withheld: tuple[np.ndarray, np.ndarray] | None = None
        self._shard = manifest["shard"].to_numpy()
        self._row = manifest["row"].to_numpy()
        self._arrays: dict[str, list[np.ndarray]] = {key: [] for key in _ARRAYS}
        for shard in meta["shards"]:
            for key in _ARRAYS:
                if key in shard:
                    self._arrays[key].append(np.load(root / shard[key]["path"], mmap_mode="r"))

    @classmethod
    def open(cls, root: str | Path, *, verify: bool = True) -> PreparedDataset:
        """Open and check a prepared dataset.

        Args:
            root: the dataset folder (``data/prepared/<dataset>``).
            verify: also re-hash every shard and the manifest against ``dataset.json``.

        Raises:
            PreparedError: a file is missing, or manifest, metadata and arrays disagree.
        """
        root = Path(root)
        meta_path = root / "dataset.json"
        if not meta_path.is_file():
            raise PreparedError(
                f"{meta_path}: not found; {root} is not a prepared dataset (run `sibnet prepare`)"
            )
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as error:
            raise PreparedError(f"{meta_path}: not valid JSON: {error}") from None
        if meta.get("format") != FORMAT:
            raise PreparedError(
                f"{meta_path}: format {meta.get('format')!r} is not supported; expected {FORMAT!r}"
            )
        manifest_path = root / "manifest.parquet"
        if not manifest_path.is_file():
            raise PreparedError(f"{manifest_path}: not found")
        if verify and sha256_file(manifest_path) != meta["manifest_sha256"]:
            raise PreparedError(f"{manifest_path}: content differs from the hash in {meta_path}")
        manifest = pq.read_table(manifest_path).to_pandas()
        _check_manifest(root, meta, manifest)
        _check_shards(root, meta, verify=verify)
        dataset = cls(root, meta, manifest)
        dataset._withheld = _read_withheld(root, meta, manifest, verify=verify)
        return dataset

    def __len__(self) -> int:
        return len(self.manifest)

    def indices(self, split: str) -> np.ndarray:
        """Manifest row numbers of one split's *labeled* images, in manifest order.

        The unlabeled images (all in ``train``) are left out: they are
        :meth:`unlabeled_indices`. Without unlabeled images: every row of the split.
        """
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; accepted: {list(SPLITS)}")
        return np.flatnonzero((self.manifest["split"].to_numpy() == split) & self._labeled)

    @property
    def labeled(self) -> np.ndarray:
        """``(N,)`` bool, read-only: whether each manifest row's labels are for training."""
        return self._labeled

    @property
    def n_unlabeled(self) -> int:
        """How many images are unlabeled (0: none)."""
        return int((~self._labeled).sum())

    def unlabeled_indices(self) -> np.ndarray:
        """Manifest row numbers of the unlabeled (training) images, in manifest order; empty
        when there are none. Their stored labels are placeholders (-1), never labels."""
        return np.flatnonzero(~self._labeled)

    def withheld_indices(self) -> np.ndarray:
        """Manifest row numbers of the unlabeled images whose true labels the dataset keeps
        apart (:meth:`withheld_labels`), in manifest order; empty when there are none."""
        if self._withheld is None:
            return np.zeros(0, dtype=np.int64)
        return self._withheld[0].copy()

    def withheld_labels(self, rows: np.ndarray) -> np.ndarray:
        """``(n, C)`` int8: the labels withheld from the unlabeled images at manifest rows
        ``rows`` (for the all-labeled upper bound only, never for semi-supervised training).

        Raises:
            PreparedError: the dataset has no withheld labels, or a row has none.
        """
        rows = np.asarray(rows, dtype=np.int64).reshape(-1)
        if self._withheld is None:
            raise PreparedError(
                f"{self.root}: this dataset has no withheld labels (no {WITHHELD_LABELS}): "
                + (
                    "its unlabeled images came without labels"
                    if self.n_unlabeled
                    else "every image is labeled"
                )
            )
        kept, labels = self._withheld
        found = np.searchsorted(kept, rows)
        missing = (found >= len(kept)) | (kept[np.minimum(found, len(kept) - 1)] != rows)
        if missing.any():
            row = int(rows[np.flatnonzero(missing)[0]])
            what = (
                f"image {self.manifest['id'].iloc[row]!r} is labeled"
                if 0 <= row < len(self) and self._labeled[row]
                else f"image {self.manifest['id'].iloc[row]!r} came without labels"
                if 0 <= row < len(self)
                else f"there is no row {row}"
            )
            raise PreparedError(f"{self.root}: row {row} has no withheld labels: {what}")
        return labels[found].copy()

    def _gather(self, key: str, rows: np.ndarray) -> np.ndarray:
        if not self._arrays[key]:
            raise PreparedError(f"{self.root}: this dataset has no {key.replace('_', ' ')}")
        arrays = self._arrays[key]
        return np.stack([arrays[self._shard[i]][self._row[i]] for i in rows])

    def images(self, rows: np.ndarray) -> np.ndarray:
        """``(n, 1, H, W)`` float32 images in [0, 1] for manifest rows ``rows``."""
        return self._gather("images", np.asarray(rows)).astype(np.float32) / 255.0

    def lesion_masks(self, rows: np.ndarray) -> np.ndarray:
        """``(n, C, H, W)`` bool lesion masks for manifest rows ``rows``."""
        return self._unpack(self._gather("lesion_masks", np.asarray(rows)))

    def organ_masks(self, rows: np.ndarray) -> np.ndarray:
        """``(n, K, H, W)`` bool organ masks for manifest rows ``rows``."""
        return self._unpack(self._gather("organ_masks", np.asarray(rows)))

    def _unpack(self, packed: np.ndarray) -> np.ndarray:
        width = self.image_size[1]
        return np.unpackbits(packed, axis=-1, count=width).astype(bool)


def _check_manifest(root: Path, meta: dict[str, Any], manifest: pd.DataFrame) -> None:
    where = root / "manifest.parquet"
    missing = [c for c in MANIFEST_COLUMNS if c not in manifest.columns]
    if missing:
        raise PreparedError(f"{where}: missing column(s) {missing}")
    if len(manifest) != meta["num_images"]:
        raise PreparedError(
            f"{where}: {len(manifest)} rows, but dataset.json records {meta['num_images']} images"
        )
    shard_rows = [s["rows"] for s in meta["shards"]]
    if sum(shard_rows) != len(manifest):
        raise PreparedError(
            f"{where}: {len(manifest)} rows, but the shards in dataset.json hold {sum(shard_rows)}"
        )
    duplicated = manifest["id"][manifest["id"].duplicated()]
    if len(duplicated):
        raise PreparedError(f"{where}: duplicate id {duplicated.iloc[0]!r}")
    bad_split = ~manifest["split"].isin(SPLITS)
    if bad_split.any():
        row = int(np.flatnonzero(bad_split)[0])
        raise PreparedError(
            f"{where}: row {row}: split {manifest['split'].iloc[row]!r} is not one of {SPLITS}"
        )
    n_classes = len(meta["classes"])
    for row, labels in enumerate(manifest["labels"]):
        if len(labels) != n_classes:
            raise PreparedError(
                f"{where}: row {row}: {len(labels)} labels, "
                f"but dataset.json has {n_classes} classes"
            )
    labeled = _check_unlabeled(where, meta, manifest)
    _check_labels(where, meta["task"], manifest, labeled)
    shards = manifest["shard"].to_numpy()
    rows = manifest["row"].to_numpy()
    limits = np.asarray([*shard_rows, 0])[np.clip(shards, -1, len(shard_rows))]
    outside = np.flatnonzero(
        (shards < 0) | (shards >= len(shard_rows)) | (rows < 0) | (rows >= limits)
    )
    if len(outside):
        row = int(outside[0])
        raise PreparedError(
            f"{where}: row {row}: points at shard {shards[row]} row {rows[row]}, "
            "which dataset.json does not have"
        )
    if len(set(zip(shards.tolist(), rows.tolist(), strict=True))) != len(manifest):
        raise PreparedError(f"{where}: two rows point at the same stored image")


def labeled_flags(manifest: pd.DataFrame) -> np.ndarray:
    """``(N,)`` bool: the manifest's optional ``labeled`` column, or all true without it."""
    if "labeled" in manifest.columns:
        return manifest["labeled"].to_numpy(bool)
    return np.ones(len(manifest), bool)


def _check_unlabeled(where: Path, meta: dict[str, Any], manifest: pd.DataFrame) -> np.ndarray:
    """The ``labeled`` column (all true when absent), checked: bool, unlabeled rows in train
    only, and agreeing with ``dataset.json``'s ``unlabeled`` entry."""
    recorded = meta.get("unlabeled")
    if "labeled" not in manifest.columns:
        if recorded:
            raise PreparedError(
                f"{where}: no column 'labeled', but dataset.json records "
                f"{recorded.get('images')} unlabeled images"
            )
        return np.ones(len(manifest), bool)
    column = manifest["labeled"]
    if column.dtype != bool:
        raise PreparedError(
            f"{where}: column 'labeled' is {column.dtype}; accepted: bool (true: labeled)"
        )
    labeled = column.to_numpy(bool)
    outside = np.flatnonzero(~labeled & (manifest["split"].to_numpy() != "train"))
    if len(outside):
        row = int(outside[0])
        raise PreparedError(
            f"{where}: row {row} (id {manifest['id'].iloc[row]!r}) is unlabeled (labeled "
            f"false) but in split {manifest['split'].iloc[row]!r}; accepted: unlabeled images "
            "only in split 'train'"
        )
    count = int((~labeled).sum())
    if not isinstance(recorded, dict) or recorded.get("images") != count:
        found = "no 'unlabeled' entry" if not recorded else f"{recorded.get('images')!r}"
        raise PreparedError(
            f"{where}: {count} unlabeled rows, but dataset.json records {found}; a dataset "
            "with unlabeled images records their number in dataset.json's 'unlabeled.images'"
        )
    return labeled


def _check_labels(
    where: Path, task: str, manifest: pd.DataFrame, labeled: np.ndarray | None = None
) -> None:
    """Labels are 0/1; -1 (unknown) only in multi-label train/val rows; one-hot if multi-class;
    an unlabeled row's labels (``labeled`` false) are all -1, in either task."""
    labels = np.array(manifest["labels"].tolist(), dtype=np.int64).reshape(len(manifest), -1)
    if labeled is None:
        labeled = np.ones(len(manifest), bool)
    placeholder = np.flatnonzero(~labeled & ~(labels == -1).all(axis=1))
    if len(placeholder):
        row = int(placeholder[0])
        raise PreparedError(
            f"{where}: row {row} (id {manifest['id'].iloc[row]!r}) is unlabeled but has labels "
            f"{labels[row].tolist()}; accepted: all -1 (placeholders) in an unlabeled row"
        )
    test = manifest["split"].to_numpy() == "test"
    allowed = (labels == 0) | (labels == 1)
    if task == "multilabel":
        allowed |= (labels == -1) & ~test[:, None]
    allowed |= ~labeled[:, None]
    bad = np.flatnonzero(~allowed.all(axis=1))
    if len(bad):
        row = int(bad[0])
        raise PreparedError(
            f"{where}: row {row} ({manifest['split'].iloc[row]}): labels {labels[row].tolist()}; "
            "accepted: 0 or 1, and -1 (unknown) only in multi-label train/val rows (or, all -1, "
            "in unlabeled rows)"
        )
    if task == "multiclass" and len(labels):
        not_one_hot = np.flatnonzero((labels.sum(axis=1) != 1) & labeled)
        if len(not_one_hot):
            row = int(not_one_hot[0])
            raise PreparedError(
                f"{where}: row {row}: multi-class labels must be one-hot, got "
                f"{labels[row].tolist()}"
            )


def _read_withheld(
    root: Path, meta: dict[str, Any], manifest: pd.DataFrame, *, verify: bool
) -> tuple[np.ndarray, np.ndarray] | None:
    """The withheld labels, checked: ``(manifest rows, (n, C) int8 labels)`` in manifest
    order, or ``None`` when the dataset has none."""
    recorded = meta.get("unlabeled") or {}
    count = recorded.get("withheld_labels", 0)
    entry = recorded.get("withheld_labels_file")
    meta_path = root / "dataset.json"
    if not isinstance(count, int) or count < 0 or (count > 0) != (entry is not None):
        raise PreparedError(
            f"{meta_path}: 'unlabeled' records {count!r} withheld labels and "
            f"{'a' if entry else 'no'} withheld_labels_file; accepted: a count ≥ 0, with the "
            "file exactly when it is > 0"
        )
    if entry is None:
        return None
    path = root / entry["path"]
    if not path.is_file():
        raise PreparedError(f"{path}: withheld labels listed in dataset.json are missing")
    if verify and sha256_file(path) != entry["sha256"]:
        raise PreparedError(f"{path}: content differs from the hash in dataset.json")
    try:
        table = pq.read_table(path)
    except (OSError, pa.ArrowException) as error:
        raise PreparedError(f"{path}: not a readable parquet file: {error}") from None
    if table.column_names != ["id", "labels"]:
        raise PreparedError(f"{path}: columns {table.column_names}; expected ['id', 'labels']")
    ids = table["id"].to_pylist()
    if len(ids) != count:
        raise PreparedError(f"{path}: {len(ids)} rows, but dataset.json records {count}")
    position = {image: row for row, image in enumerate(manifest["id"].tolist())}
    labeled = labeled_flags(manifest)
    rows = np.array([position.get(image, -1) for image in ids], dtype=np.int64)
    for k, (image, row) in enumerate(zip(ids, rows, strict=True)):
        if row < 0 or labeled[row]:
            what = "not in the manifest" if row < 0 else "a labeled image"
            raise PreparedError(
                f"{path}: row {k}: id {image!r} is {what}; accepted: the ids of unlabeled rows"
            )
    if len(rows) > 1 and (np.diff(rows) <= 0).any():
        raise PreparedError(f"{path}: rows are not in manifest order")
    n_classes = len(meta["classes"])
    values = table["labels"].to_pylist()
    for k, labels in enumerate(values):
        if labels is None or len(labels) != n_classes:
            raise PreparedError(
                f"{path}: row {k} (id {ids[k]!r}): {0 if labels is None else len(labels)} "
                f"labels, but dataset.json has {n_classes} classes"
            )
    labels = np.array(values, dtype=np.int8).reshape(len(values), n_classes)
    frame = pd.DataFrame({"id": ids, "split": "train", "labels": list(labels)})
    _check_labels(path, meta["task"], frame)
    return rows, labels


def _check_shards(root: Path, meta: dict[str, Any], *, verify: bool) -> None:
    height, width = meta["image_size"]
    channels = {
        "images": 1,
        "lesion_masks": len(meta["classes"]),
        "organ_masks": len(meta["organs"]),
    }
    packed_width = -(-width // 8)
    for index, shard in enumerate(meta["shards"]):
        for key in _ARRAYS:
            if key not in shard:
                continue
            path = root / shard[key]["path"]
            if not path.is_file():
                raise PreparedError(f"{path}: shard {index} listed in dataset.json is missing")
            try:
                array = np.load(path, mmap_mode="r")
            except ValueError as error:
                raise PreparedError(f"{path}: not a readable .npy array: {error}") from None
            last = width if key == "images" else packed_width
            expected = (shard["rows"], channels[key], height, last)
            if array.shape != expected or array.dtype != np.uint8:
                raise PreparedError(
                    f"{path}: array is {array.dtype}{list(array.shape)}, but the manifest and "
                    f"dataset.json expect uint8{list(expected)}"
                )
            if verify and sha256_file(path) != shard[key]["sha256"]:
                raise PreparedError(f"{path}: content differs from the hash in dataset.json")
