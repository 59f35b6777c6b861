"""CheXpert (Irvin et al., AAAI 2019): ``train.csv`` / ``valid.csv`` + JPEG images → a plan.

Its params are :class:`~sibnet.data.sources.chexpert.ChexpertParams` (``prepare.chexpert``).

The label tables have the columns ``Path``, ``Sex``, ``Age``, ``Frontal/Lateral``, ``AP/PA`` and
the 14 observations (:data:`~sibnet.data.sources.chexpert.CHEXPERT_OBSERVATIONS`), each
``1.0`` (positive), ``0.0`` (negative), ``-1.0`` (uncertain) or blank (not mentioned).
Decisions:

- **Classes**: ``prepare.chexpert.classes``, by default the five competition labels
  (Atelectasis, Cardiomegaly, Consolidation, Edema, Pleural Effusion). The task is multi-label.
- **Values**: blank → 0. Uncertain (-1) by ``uncertainty``: ``ones`` (U-Ones) → 1, ``zeros``
  (U-Zeros) → 0, ``ignore`` (U-Ignore) → -1, *unknown*: masked out of the loss and the metrics.
  ``1``, ``0`` and ``-1`` are accepted as well; any other value is a problem of its row.
- **Views**: with ``frontal_only`` (default) lateral images are left out (counted in
  ``dataset.json``, not problems).
- **Splits**: ``valid.csv`` (radiologist consensus) is the test split. ``train.csv`` is split
  into train and val by patient — the patient id is the ``patient<digits>`` part of the path —
  stratified by label pattern with ``prepare.split.val`` and ``prepare.split.seed``
  (``prepare.split.test`` is not used). A patient in both tables is a problem (no patient may
  be in two splits). Under U-Ignore an uncertain value in ``valid.csv`` is a problem: test
  labels must be known.
- **Images**: resized to ``prepare.size`` by ``prepare.resize`` (see :mod:`sibnet.data.images`).
- **Expert masks** (optional, for saliency agreement): ``prepare.chexpert.lesion_masks`` is a
  folder of ``<Path without suffix>/<class>.png`` (see :mod:`sibnet.data.adapters.tables`).
- **Unlabeled images** (optional): with ``unlabeled_fraction`` > 0, once train and val are
  drawn, the images of that fraction of the train patients are made unlabeled and their labels
  withheld (:func:`~sibnet.data.adapters.tables.withhold_labels`, seeded by
  ``prepare.split.seed``; see :mod:`sibnet.data.prepared`). (The folder source's
  ``unlabeled_csv``, images that come without labels, has no CheXpert counterpart.)
- Only ``Path``, ``Frontal/Lateral`` and the class columns are read; ``Sex``, ``Age``, ``AP/PA``
  and the other observations never leave the CSV.
- **Configuration errors**: a ``root`` or ``lesion_masks`` folder, a ``train_csv`` or
  ``valid_csv`` that is not there, or a table that lacks ``Path``, ``Frontal/Lateral`` or a
  class column, is a :class:`~sibnet.config.ParamsError` naming the key
  (:func:`check_chexpert`, run by ``sibnet prepare`` before anything else), not a problem of
  the data. Fewer than 2 usable patients in ``train.csv`` (train and val need one each) or no
  usable image in ``valid.csv`` cannot be solved by leaving rows out either.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from sibnet.config import PrepareParams
from sibnet.data.adapters.tables import (
    check_directory,
    check_table,
    find_duplicates,
    mask_files,
    read_table,
    relative_image_path,
    withhold_labels,
)
from sibnet.data.plan import ImageSettings, Plan, Record
from sibnet.data.problems import Problem
from sibnet.data.sources import Adapter, register_adapter
from sibnet.data.sources.chexpert import ChexpertParams
from sibnet.data.splits import SplitError, stratified_split

__all__ = ["check_chexpert", "plan_chexpert"]

_KEY = "prepare.chexpert"

_PATIENT = re.compile(r"(?:^|/)(patient\d+)(?:/|$)")
_VALUES = {"1.0": 1, "1": 1, "0.0": 0, "0": 0, "-1.0": -1, "-1": -1, "": 0}
_UNCERTAIN = {"ones": 1, "zeros": 0, "ignore": -1}


def _labels(
    row: dict[str, str], classes: list[str], policy: str, test: bool
) -> tuple[tuple[int, ...] | None, str | None]:
    labels = []
    for name in classes:
        raw = row[name].strip()
        if raw not in _VALUES:
            return None, (
                f"column {name!r}: unknown label value {raw!r}; accepted: 1.0, 0.0, -1.0 or blank"
            )
        value = _VALUES[raw]
        if value == -1:
            value = _UNCERTAIN[policy]
            if value == -1 and test:
                return None, (
                    f"column {name!r}: uncertain (-1) in the test table; under "
                    "uncertainty: ignore test labels must be known (use ones or zeros)"
                )
        labels.append(value)
    return tuple(labels), None


def _tables(params: PrepareParams) -> list[tuple[str, str, dict[str, str]]]:
    """``(table, key, columns)`` of both label tables: each column → the key naming it."""
    options = params.chexpert
    tables = []
    for key, table in (("train_csv", options.train_csv), ("valid_csv", options.valid_csv)):
        columns = {"Path": f"{_KEY}.{key}", "Frontal/Lateral": f"{_KEY}.{key}"}
        columns |= {c: f"{_KEY}.classes" for c in options.classes}
        tables.append((table, f"{_KEY}.{key}", columns))
    return tables


def check_chexpert(params: PrepareParams) -> None:
    """Check what ``prepare.chexpert`` names exists: ``root``, ``lesion_masks`` and both label
    tables with their columns (headers only are read).

    Raises:
        ParamsError: something named is not there; the message names the key.
        DataError: a table is not readable as CSV.
    """
    options = params.chexpert
    check_directory(
        options.root,
        f"{_KEY}.root",
        "the folder the CSVs' Path column is relative to (the parent of CheXpert-v1.0/)",
    )
    check_directory(
        options.lesion_masks,
        f"{_KEY}.lesion_masks",
        "the folder of lesion masks (<Path without suffix>/<class>.png)",
    )
    root = Path(options.root or ".")
    for table, key, columns in _tables(params):
        check_table(root / table, columns, key=key, name=table)


def plan_chexpert(params: PrepareParams) -> Plan:
    """Read CheXpert's label tables into a :class:`~sibnet.data.ingest.Plan` (no image is
    decoded here; missing image files are problems already). ``sibnet prepare`` runs
    :func:`check_chexpert` first, before its MLflow run opens; the tables themselves are
    checked again as they are read (:func:`~sibnet.data.adapters.tables.read_table`)."""
    options = params.chexpert
    root = Path(options.root or ".")
    masks = Path(options.lesion_masks) if options.lesion_masks else None
    classes = list(options.classes)
    problems: list[Problem] = []
    planned: list[dict] = []
    lateral = 0
    for table_name, key, columns in _tables(params):
        test = key.endswith("valid_csv")
        table = read_table(root / table_name, columns, table_name, key=key)
        for number, row in enumerate(table.to_dict("records"), start=1):
            if options.frontal_only and row["Frontal/Lateral"].strip() == "Lateral":
                lateral += 1
                continue
            source, reason = relative_image_path(row["Path"])
            labels, label_reason = _labels(row, classes, options.uncertainty, test)
            reason = reason or label_reason
            patient = _PATIENT.search(source) if source else None
            if reason is None and patient is None:
                reason = f"no patient id (patient<digits>) in the path {source!r}"
            if reason is None and not (root / source).is_file():
                reason = f"image file {source} not found under the data root"
            files, mask_reason = (
                (None, None) if reason else mask_files(masks, source, classes, required=False)
            )
            reason = reason or mask_reason
            planned.append(
                {
                    "table": table_name,
                    "row": number,
                    "source": source,
                    "labels": labels,
                    "patient": patient.group(1) if patient else None,
                    "test": test,
                    "masks": files,
                    "reason": reason,
                }
            )
    problems += [Problem(p["table"], p["row"], p["reason"]) for p in planned if p["reason"]]
    duplicates = find_duplicates(
        [None if p["reason"] else p["source"] for p in planned],
        [(p["table"], p["row"]) for p in planned],
    )
    problems += duplicates
    repeated = {(d.file, d.row) for d in duplicates}
    good = [p for p in planned if not p["reason"] and (p["table"], p["row"]) not in repeated]
    train_patients = {p["patient"] for p in good if not p["test"]}
    crossing = [p for p in good if p["test"] and p["patient"] in train_patients]
    problems += [
        Problem(
            p["table"],
            p["row"],
            f"patient {p['patient']} is also in {options.train_csv}; a patient must be in one "
            "split only",
        )
        for p in crossing
    ]
    good = [p for p in good if p not in crossing]

    train = [p for p in good if not p["test"]]
    counted = " (counting the rows without problems)" if problems else ""
    fatal: list[Problem] = []
    try:
        splits = stratified_split(
            np.array([p["labels"] for p in train], dtype=np.int8).reshape(len(train), len(classes)),
            val=params.split.val,
            test=0.0,
            seed=params.split.seed,
            groups=np.array([p["patient"] for p in train]),
        )
    except SplitError as error:
        fatal.append(
            Problem(
                options.train_csv, None, f"{error}{counted}; add patients to {options.train_csv}"
            )
        )
        splits = np.array(["train"] * len(train))
    if not any(p["test"] for p in good):
        fatal.append(
            Problem(
                options.valid_csv,
                None,
                f"the test split is empty: {options.valid_csv} (the test split) has no "
                f"{'frontal ' if options.frontal_only else ''}image"
                f"{' without problems' if problems else ''}; every split needs at least one image",
            )
        )
    split_of = {id(p): s for p, s in zip(train, splits, strict=True)}
    records = [
        Record(
            table=p["table"],
            row=p["row"],
            id=p["source"],
            split="test" if p["test"] else str(split_of[id(p)]),
            patient_id=p["patient"],
            labels=p["labels"],
            source=p["source"],
            path=str(root / p["source"]),
            lesion_masks=p["masks"],
        )
        for p in good
    ]
    origin = None
    if options.unlabeled_fraction > 0 and not fatal:
        records, dropped = withhold_labels(records, options.unlabeled_fraction, params.split.seed)
        if dropped:
            origin = (
                f"prepare.chexpert.unlabeled_fraction {options.unlabeled_fraction:g} of train "
                f"patients (seed {params.split.seed}): {dropped} patients"
            )
    return Plan(
        name=params.dataset,
        task="multilabel",
        classes=classes,
        organs=[],
        records=records,
        problems=problems,
        fatal=fatal,
        lesion_masks=masks is not None,
        settings=ImageSettings((params.size, params.size), params.resize),
        source={
            "adapter": "chexpert",
            "table": options.train_csv,
            "tables": [options.train_csv, options.valid_csv],
            "uncertainty": options.uncertainty,
            "frontal_only": options.frontal_only,
            "lateral_left_out": lateral,
            "lesion_masks": masks is not None,
            **(
                {"unlabeled_fraction": options.unlabeled_fraction}
                if options.unlabeled_fraction > 0
                else {}
            ),
        },
        unlabeled_origin=origin,
    )


register_adapter("chexpert", Adapter(ChexpertParams, plan_chexpert, check_chexpert))
