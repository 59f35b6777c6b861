"""Your own data: a CSV of image paths and labels plus the image files → a plan.

``prepare.folder`` describes the table (see :class:`~sibnet.config.FolderParams`):

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
- ``lesion_masks`` / ``organ_masks`` (optional): mask folders of
  ``<image path without suffix>/<class>.png`` and ``<image path without suffix>/<organ>.png``
  (see :mod:`sibnet.data.adapters.tables`); ``organs`` names the segmentation structures.

Only the named columns are read; any other column of the CSV never leaves it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from sibnet.config import PrepareParams
from sibnet.data.adapters.tables import (
    find_duplicates,
    mask_files,
    read_table,
    relative_image_path,
)
from sibnet.data.decode import Record
from sibnet.data.ingest import Plan
from sibnet.data.problems import Problem
from sibnet.data.splits import SPLITS, stratified_split

__all__ = ["plan_folder"]

_BINARY = {"1": 1, "1.0": 1, "0": 0, "0.0": 0}


def plan_folder(params: PrepareParams) -> Plan:
    """Read the folder source's CSV into a :class:`~sibnet.data.ingest.Plan` (no image is
    decoded here; missing image files are problems already)."""
    options = params.folder
    root = Path(options.root or ".")
    csv_path = Path(options.csv) if Path(options.csv).is_absolute() else root / options.csv
    table_name = Path(options.csv).name
    classes = list(options.classes)
    label_columns = classes if options.task == "multilabel" else [options.label_column]
    optional = [c for c in (options.patient_column, options.split_column) if c]
    columns = list(dict.fromkeys([options.path_column, *label_columns, *optional]))
    table = read_table(csv_path, columns, table_name)
    lesion_root = Path(options.lesion_masks) if options.lesion_masks else None
    organ_root = Path(options.organ_masks) if options.organ_masks else None

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
            lesions, reason = mask_files(lesion_root, source, classes, required=False)
        if reason is None:
            organs, reason = mask_files(organ_root, source, options.organs, required=True)
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
    if options.split_column:
        problems += _patients_across_splits(good, table_name)
    elif good:
        splits = stratified_split(
            np.array([p["labels"] for p in good], dtype=np.int8),
            val=params.split.val,
            test=params.split.test,
            seed=params.split.seed,
            groups=np.array([p["patient"] for p in good]),
        )
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
        if p["row"] not in failed
    ]
    return Plan(
        name=params.dataset,
        task=options.task,
        classes=classes,
        organs=list(options.organs),
        records=records,
        problems=problems,
        lesion_masks=lesion_root is not None,
        source={
            "adapter": "folder",
            "table": table_name,
            "intensity": options.intensity,
            "split_column": options.split_column is not None,
            "patient_column": options.patient_column is not None,
        },
    )


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
