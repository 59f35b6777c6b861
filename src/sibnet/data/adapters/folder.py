"""Your own data: a CSV of image paths and labels plus the image files → a plan.

``prepare.folder`` describes the table (see :class:`~sibnet.data.sources.folder.FolderParams`):

- ``path_column``: the image path relative to ``root``. PNG (8- or 16-bit), JPEG or DICOM,
  recognised by content (see :mod:`sibnet.data.images`; ``intensity`` scales PNG/JPEG, DICOM
  uses its rescale slope/intercept and window, MONOCHROME1 inverted).
- ``task: multilabel``: one column per class, named as the class, valued ``1``/``0`` (also
  ``1.0``/``0.0``). ``task: multiclass``: ``label_column`` holds one class name per row.
  Anything else is a problem of its row.
- ``patient_column`` (optional): rows of one patient stay in one split. Without it every
  image is its own patient.
- ``split_column`` (optional): ``train``, ``val`` or ``test`` per row. Without it the split is
  drawn by patient, stratified by label pattern, from ``prepare.split``.
- Masks (optional), one PNG per class (lesion masks) or organ (segmentation masks, ``organs``
  names the structures), given one of two ways for each kind (both for one kind is a params
  error; see :mod:`sibnet.data.adapters.tables`):

  - mask folders, ``lesion_masks`` / ``organ_masks``: ``<image path without suffix>/<class>.png``
    and ``<image path without suffix>/<organ>.png``; an image is annotated when its folder
    exists;
  - columns of the CSV, ``lesion_mask_columns`` (class → column) / ``organ_mask_columns``
    (every organ → column): each cell the mask's path relative to ``root`` (as image paths),
    an empty cell an empty mask; a row is annotated when any of its mask cells is filled; a
    mask file named but not there is a problem of its row.

Only the named columns are read; any other column of the CSV never leaves it.

Unlabeled training images (:mod:`sibnet.data.prepared`), either or both of:

- ``unlabeled_fraction``: after the splits are drawn (or read from ``split_column``), the
  images of that fraction of the train patients (by patient; without ``patient_column`` by
  image) are made unlabeled, their labels withheld
  (:func:`~sibnet.data.splits.unlabeled_groups`, seeded by ``prepare.split.seed``);
- ``unlabeled_csv``: a second CSV (relative to ``root``, or absolute) with ``path_column``
  (and ``patient_column`` when set), no label columns: its images are added to train,
  unlabeled, with no labels withheld. Its rows have the problems of the main CSV's (path,
  missing file, duplicate path across both CSVs, masks from the mask folders), and a patient
  who is in val or test is a problem of the row (a patient stays in one split). Mask columns
  are not read from it: its images have masks only through the mask folders.

Configuration errors: a ``root`` or mask folder that is not there, a CSV that is not there, or
a column the params name (``path_column``, the classes or ``label_column``, ``patient_column``,
``split_column``, the mask columns) that the CSV lacks is a
:class:`~sibnet.config.ParamsError` naming the key (:func:`check_folder`, run by ``sibnet
prepare`` before anything else), not a problem of the data.

Splits: drawn ones give every split at least one patient (see
:func:`~sibnet.data.splits.stratified_split`); a dataset with fewer patients than splits, or a
``split_column`` that gives a split no row, cannot be prepared whatever rows are left out (a
problem that names what would help).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from sibnet.config import ParamsError, PrepareParams
from sibnet.data.adapters.tables import (
    check_directory,
    check_table,
    find_duplicates,
    mask_cells,
    mask_files,
    read_table,
    relative_image_path,
    withhold_labels,
)
from sibnet.data.plan import ImageSettings, Plan, Record
from sibnet.data.problems import Problem
from sibnet.data.sources import Adapter, register_adapter
from sibnet.data.sources.folder import FolderParams
from sibnet.data.splits import SPLITS, SplitError, stratified_split

__all__ = ["check_folder", "plan_folder"]

_BINARY = {"1": 1, "1.0": 1, "0": 0, "0.0": 0}
_KEY = "prepare.folder"


def _csv_path(options: FolderParams) -> Path:
    csv = Path(options.csv)
    return csv if csv.is_absolute() else Path(options.root or ".") / csv


def _unlabeled_csv_path(options: FolderParams) -> Path | None:
    if options.unlabeled_csv is None:
        return None
    csv = Path(options.unlabeled_csv)
    return csv if csv.is_absolute() else Path(options.root or ".") / csv


def _unlabeled_columns(options: FolderParams) -> dict[str, str]:
    """The columns of ``unlabeled_csv`` that are read, each → the key naming it."""
    columns = {options.path_column: f"{_KEY}.path_column"}
    if options.patient_column is not None:
        columns.setdefault(options.patient_column, f"{_KEY}.patient_column")
    return columns


def _columns(options: FolderParams) -> dict[str, str]:
    """The CSV's columns the params name, in reading order, each → the key naming it."""
    named: list[tuple[str | None, str]] = [(options.path_column, f"{_KEY}.path_column")]
    if options.task == "multilabel":
        named += [(c, f"{_KEY}.classes") for c in options.classes]
    else:
        named.append((options.label_column, f"{_KEY}.label_column"))
    named += [
        (options.patient_column, f"{_KEY}.patient_column"),
        (options.split_column, f"{_KEY}.split_column"),
    ]
    for kind in ("lesion", "organ"):
        columns = getattr(options, f"{kind}_mask_columns") or {}
        named += [(c, f"{_KEY}.{kind}_mask_columns.{n}") for n, c in columns.items()]
    found: dict[str, str] = {}
    for column, key in named:
        if column is not None:
            found.setdefault(column, key)
    return found


def check_folder(params: PrepareParams) -> None:
    """Check what ``prepare.folder`` names exists: ``root``, the mask folders, the CSV and its
    columns (the header only is read).

    Raises:
        ParamsError: something named is not there; the message names the key.
        DataError: the CSV is not readable as CSV.
    """
    options = params.folder
    check_directory(
        options.root, f"{_KEY}.root", "the folder the CSV's image paths are relative to"
    )
    for kind in ("lesion", "organ"):
        check_directory(
            getattr(options, f"{kind}_masks"),
            f"{_KEY}.{kind}_masks",
            f"the folder of {kind} masks (<image path without suffix>/<name>.png)",
        )
    check_table(
        _csv_path(options), _columns(options), key=f"{_KEY}.csv", name=Path(options.csv).name
    )
    unlabeled = _unlabeled_csv_path(options)
    if unlabeled is not None:
        if unlabeled.name == _csv_path(options).name:
            raise ParamsError(
                f"{_KEY}.unlabeled_csv = {options.unlabeled_csv!r} has the file name of "
                f"{_KEY}.csv ({Path(options.csv).name!r}): problems are reported by file name, "
                "so the two must be told apart; accepted: another file with another name"
            )
        check_table(
            unlabeled,
            _unlabeled_columns(options),
            key=f"{_KEY}.unlabeled_csv",
            name=Path(str(options.unlabeled_csv)).name,
        )


def plan_folder(params: PrepareParams) -> Plan:
    """Read the folder source's CSV into a :class:`~sibnet.data.ingest.Plan` (no image is
    decoded here; missing image files are problems already). ``sibnet prepare`` runs
    :func:`check_folder` first, before its MLflow run opens; the tables themselves are checked again
    as they are read (:func:`~sibnet.data.adapters.tables.read_table`)."""
    options = params.folder
    root = Path(options.root or ".")
    table_name = Path(options.csv).name
    classes = list(options.classes)
    table = read_table(_csv_path(options), _columns(options), table_name, key=f"{_KEY}.csv")
    lesion_root = Path(options.lesion_masks) if options.lesion_masks else None
    organ_root = Path(options.organ_masks) if options.organ_masks else None
    lesion_columns = options.lesion_mask_columns
    organ_columns = options.organ_mask_columns

    planned: list[dict] = []
    for number, row in enumerate(table.to_dict("records"), start=1):
        source, reason = relative_image_path(row[options.path_column])
        labels: tuple[int, ...] | None = None
        if options.task == "multilabel":
            bad = [c for c in classes if row[c].strip() not in _BINARY]
            if bad:
                reason = reason or (
                    f"column {bad[0]!r}: unknown label value {row[bad[0]].strip()!r}; "
                    "accepted: 1 or 0"
                )
            else:
                labels = tuple(_BINARY[row[c].strip()] for c in classes)
        else:
            value = row[options.label_column].strip()
            if value in classes:
                labels = tuple(int(c == value) for c in classes)
            else:
                reason = reason or (
                    f"column {options.label_column!r}: unknown class {value!r}; accepted: {classes}"
                )
        split = row[options.split_column].strip() if options.split_column else None
        if split is not None and split not in SPLITS:
            reason = reason or (
                f"column {options.split_column!r}: unknown split {split!r}; "
                f"accepted: {list(SPLITS)}"
            )
        patient = row[options.patient_column].strip() if options.patient_column else source
        if reason is None and not patient:
            reason = f"column {options.patient_column!r}: the patient id is empty"
        if reason is None and not (root / source).is_file():
            reason = f"image file {source} not found under the data root"
        lesions = organs = None
        if reason is None:
            lesions, reason = (
                mask_files(lesion_root, source, classes, required=False)
                if lesion_columns is None
                else mask_cells(root, row, lesion_columns, classes, required=False)
            )
        if reason is None:
            organs, reason = (
                mask_files(organ_root, source, options.organs, required=True)
                if organ_columns is None
                else mask_cells(root, row, organ_columns, options.organs, required=True)
            )
        planned.append(
            {
                "row": number,
                "source": source,
                "labels": labels,
                "split": split,
                "patient": patient,
                "lesions": lesions,
                "organs": organs,
                "reason": reason,
            }
        )
    problems = [Problem(table_name, p["row"], p["reason"]) for p in planned if p["reason"]]
    duplicates = find_duplicates(
        [None if p["reason"] else p["source"] for p in planned],
        [(table_name, p["row"]) for p in planned],
    )
    problems += duplicates
    repeated = {d.row for d in duplicates}
    good = [p for p in planned if not p["reason"] and p["row"] not in repeated]
    fatal: list[Problem] = []
    if options.split_column:
        problems += _patients_across_splits(good, table_name)
        failed = {p.row for p in problems}
        present = {p["split"] for p in good if p["row"] not in failed}
        fatal += [
            Problem(
                table_name,
                None,
                f"the {s} split is empty: no row{' without problems' if problems else ''} has "
                f"{s!r} in column {options.split_column!r}; every split needs at least one image",
            )
            for s in SPLITS
            if s not in present
        ]
    else:
        try:
            splits = stratified_split(
                np.array([p["labels"] for p in good], dtype=np.int8).reshape(
                    len(good), len(classes)
                ),
                val=params.split.val,
                test=params.split.test,
                seed=params.split.seed,
                groups=np.array([p["patient"] for p in good]),
            )
        except SplitError as error:
            counted = " (counting the rows without problems)" if problems else ""
            fatal.append(
                Problem(
                    table_name,
                    None,
                    f"{error}{counted}; add patients, or give every row its split in a column "
                    f"({_KEY}.split_column)",
                )
            )
        else:
            for p, split in zip(good, splits, strict=True):
                p["split"] = str(split)
    failed = {p.row for p in problems}
    records = [
        Record(
            table=table_name,
            row=p["row"],
            id=p["source"],
            split=p["split"],
            patient_id=p["patient"],
            labels=p["labels"],
            source=p["source"],
            path=str(root / p["source"]),
            lesion_masks=p["lesions"],
            organ_masks=p["organs"],
        )
        for p in good
        if p["row"] not in failed and not fatal
    ]
    origins: list[str] = []
    source = {
        "adapter": "folder",
        "table": table_name,
        "intensity": options.intensity,
        "split_column": options.split_column is not None,
        "patient_column": options.patient_column is not None,
    }
    if options.unlabeled_fraction > 0:
        records, dropped = withhold_labels(records, options.unlabeled_fraction, params.split.seed)
        source["unlabeled_fraction"] = options.unlabeled_fraction
        if dropped:
            by = "patients" if options.patient_column else "images"
            origins.append(
                f"prepare.folder.unlabeled_fraction {options.unlabeled_fraction:g} of train "
                f"{by} (seed {params.split.seed}): {dropped} {by}"
            )
    if options.unlabeled_csv is not None:
        extra_name = Path(options.unlabeled_csv).name
        extra, extra_problems = _unlabeled_records(
            options,
            extra_name,
            records,
            [None if p["reason"] else p["source"] for p in planned],
            [(table_name, p["row"]) for p in planned],
            lesion_root,
            organ_root,
        )
        problems += extra_problems
        if not fatal:
            records += extra
        source["tables"] = [table_name, extra_name]
        source["unlabeled_table"] = extra_name
        if extra:
            origins.append(f"prepare.folder.unlabeled_csv {extra_name}: {len(extra)} images")
    return Plan(
        name=params.dataset,
        task=options.task,
        classes=classes,
        organs=list(options.organs),
        records=records,
        problems=problems,
        fatal=fatal,
        lesion_masks=lesion_root is not None or lesion_columns is not None,
        settings=ImageSettings((params.size, params.size), params.resize, options.intensity),
        source=source,
        unlabeled_origin="; ".join(origins) or None,
    )


def _unlabeled_records(
    options: FolderParams,
    table_name: str,
    labeled: list[Record],
    sources: list[str | None],
    where: list[tuple[str, int]],
    lesion_root: Path | None,
    organ_root: Path | None,
) -> tuple[list[Record], list[Problem]]:
    """The records of ``unlabeled_csv`` (train, unlabeled, nothing withheld) and the problems
    of its rows. ``sources``/``where``: the main CSV's paths (``None``: a row with a problem)
    and rows, for duplicates across the two."""
    root = Path(options.root or ".")
    path = _unlabeled_csv_path(options)
    assert path is not None
    table = read_table(path, _unlabeled_columns(options), table_name, key=f"{_KEY}.unlabeled_csv")
    split_of = {r.patient_id: r.split for r in labeled}
    planned: list[dict] = []
    for number, row in enumerate(table.to_dict("records"), start=1):
        source, reason = relative_image_path(row[options.path_column])
        patient = row[options.patient_column].strip() if options.patient_column else source
        if reason is None and not patient:
            reason = f"column {options.patient_column!r}: the patient id is empty"
        if reason is None and split_of.get(patient, "train") != "train":
            reason = (
                f"patient {patient!r} is in split {split_of[patient]!r} ({options.csv}); "
                "unlabeled images are training images, and a patient must be in one split only"
            )
        if reason is None and not (root / source).is_file():
            reason = f"image file {source} not found under the data root"
        lesions = organs = None
        if reason is None:
            lesions, reason = mask_files(lesion_root, source, options.classes, required=False)
        if reason is None:
            organs, reason = mask_files(organ_root, source, options.organs, required=True)
        planned.append(
            {
                "row": number,
                "source": source,
                "patient": patient,
                "lesions": lesions,
                "organs": organs,
                "reason": reason,
            }
        )
    problems = [Problem(table_name, p["row"], p["reason"]) for p in planned if p["reason"]]
    first: dict[str, tuple[str, int]] = {}
    for source, place in zip(sources, where, strict=True):
        if source is not None:
            first.setdefault(source, place)
    for p in planned:
        if p["reason"]:
            continue
        if p["source"] in first:
            table, row = first[p["source"]]
            problems.append(
                Problem(
                    table_name,
                    p["row"],
                    f"duplicate image path {p['source']} (also {table} row {row})",
                )
            )
        else:
            first[p["source"]] = (table_name, p["row"])
    failed = {p.row for p in problems}
    n_classes = len(options.classes)
    records = [
        Record(
            table=table_name,
            row=p["row"],
            id=p["source"],
            split="train",
            patient_id=p["patient"],
            labels=(-1,) * n_classes,
            source=p["source"],
            path=str(root / p["source"]),
            lesion_masks=p["lesions"],
            organ_masks=p["organs"],
            labeled=False,
        )
        for p in planned
        if p["row"] not in failed
    ]
    return records, problems


def _patients_across_splits(planned: list[dict], table: str) -> list[Problem]:
    """A problem for each row whose patient was already given another split."""
    seen: dict[str, tuple[str, int]] = {}
    problems = []
    for p in planned:
        first = seen.setdefault(p["patient"], (p["split"], p["row"]))
        if first[0] != p["split"]:
            problems.append(
                Problem(
                    table,
                    p["row"],
                    f"patient {p['patient']!r} is in split {p['split']!r} here but in "
                    f"{first[0]!r} at row {first[1]}; a patient must be in one split only",
                )
            )
    return problems


register_adapter("folder", Adapter(FolderParams, plan_folder, check_folder))
