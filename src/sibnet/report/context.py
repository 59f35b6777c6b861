"""What every report section reads through: params, the runs' output paths, shared loads.

:class:`ReportContext` finds each run's output of a gathered stage (and refuses a missing one,
naming the stage that writes it), records every file read (the *Inputs* table of
``summary.md``), and loads the outputs that several sections share once: the clean test
predictions (:meth:`ReportContext.test_predictions`) and the training histories
(:meth:`ReportContext.histories`).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from sibnet.config import Params
from sibnet.dag import MODELS, RESULTS, gathered, stage
from sibnet.report.section import ReportError

__all__ = ["ReportContext", "TestPredictions"]


@dataclass(frozen=True)
class TestPredictions:
    """Every run's clean test predictions (the ``evaluate`` stage's).

    Attributes:
        classes: the class names, in column order.
        ids: ``(N,)`` test image ids, the same for every run.
        targets: ``(N, C)`` 0/1 labels.
        probs: method → one ``(N, C)`` probability array per seed, in ``pipeline.seeds`` order.
    """

    classes: list[str]
    ids: np.ndarray
    targets: np.ndarray
    probs: dict[str, list[np.ndarray]]


@dataclass
class ReportContext:
    """The params and input folders of one report, and the files read so far.

    Args:
        params: validated params.
        results: ``results/<dataset>``, the per-run results folder.
        models: ``models/<dataset>``, the per-run models folder.
        prepared: the prepared dataset folder (``None``: a report that reads nothing of it).
    """

    params: Params
    results: Path
    models: Path
    prepared: Path | None = None
    _read: list[tuple[str, Path]] = field(default_factory=list, repr=False)
    _cache: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def methods(self) -> list[str]:
        return list(self.params.pipeline.methods)

    @property
    def seeds(self) -> list[int]:
        return list(self.params.pipeline.seeds)

    @property
    def runs(self) -> list[tuple[str, int]]:
        """Every (method, seed), method-major."""
        return [(m, s) for m in self.methods for s in self.seeds]

    @property
    def reference(self) -> str:
        return self.params.report.reference

    @property
    def boot(self) -> dict[str, Any]:
        """The bootstrap keywords of :mod:`sibnet.metrics.comparison`'s comparisons."""
        settings = self.params.report
        return {
            "resamples": settings.bootstrap,
            "confidence": settings.confidence,
            "seed": settings.seed,
        }

    @property
    def verdicts(self) -> dict[str, Any]:
        """The keywords of :func:`~sibnet.metrics.comparison.add_verdicts`."""
        return {"confidence": self.params.report.confidence, "reference": self.reference}

    def path(self, stage_name: str, output: str, method: str, seed: int) -> Path:
        """The path of one run's ``output`` of ``stage_name``, recorded as an input.

        Raises:
            ReportError: the file is missing (named with the stage that writes it).
        """
        spec = stage(stage_name)
        template = spec.outputs[output]
        root, prefix = (
            (self.models, MODELS) if template.startswith(MODELS + "/") else (self.results, RESULTS)
        )
        path = root / gathered(spec, prefix, output, method, seed)
        if not path.exists():
            raise ReportError(
                f"{path}: missing; it is written by `sibnet {stage_name}` for method {method!r} "
                f"seed {seed} (run the whole pipeline: snakemake --cores all, or dvc repro)"
            )
        if (stage_name, path) not in self._read:
            self._read.append((stage_name, path))
        return path

    def dataset_meta(self) -> dict[str, Any]:
        """The prepared dataset's ``dataset.json``, read once (recorded as an input).

        Raises:
            ReportError: no prepared dataset was given, or its ``dataset.json`` is missing.
        """
        if "dataset" not in self._cache:
            path = None if self.prepared is None else self.prepared / "dataset.json"
            if path is None or not path.is_file():
                raise ReportError(
                    f"{path or 'the prepared dataset'}: missing; it is written by `sibnet "
                    "prepare` (run the whole pipeline: snakemake --cores all, or dvc repro)"
                )
            self._read.append(("prepare", path))
            self._cache["dataset"] = json.loads(path.read_text(encoding="utf-8"))
        return self._cache["dataset"]

    def inputs(self) -> list[Path]:
        """Every file read, grouped by the stage that wrote it (stages by name), each group in
        the order read."""
        order = sorted({name for name, _ in self._read})
        return [path for name in order for s, path in self._read if s == name]

    def test_predictions(self) -> TestPredictions:
        """Every run's clean test predictions, read once.

        Raises:
            ReportError: a run scored other test images than the first.
        """
        if "test" not in self._cache:
            import pyarrow.parquet as pq

            from sibnet.predictions import read_predictions

            probs: dict[str, list[np.ndarray]] = {m: [] for m in self.methods}
            classes: list[str] | None = None
            ids0 = targets0 = None
            for m, s in self.runs:
                path = self.path("evaluate", "predictions", m, s)
                if classes is None:
                    columns = pq.read_schema(path).names  # the schema only, not the data
                    classes = [c.removeprefix("prob_") for c in columns if c.startswith("prob_")]
                ids, targets, p = read_predictions(path, classes)
                if ids0 is None:
                    ids0, targets0 = ids, targets
                elif not (np.array_equal(ids, ids0) and np.array_equal(targets, targets0)):
                    raise ReportError(
                        f"{path}: scored other test images than {self.runs[0]}'s predictions"
                    )
                probs[m].append(p)
            assert classes is not None and ids0 is not None and targets0 is not None
            self._cache["test"] = TestPredictions(classes, ids0, targets0, probs)
        return self._cache["test"]

    def histories(self) -> dict[str, list[pd.DataFrame]]:
        """Method → each seed's training history (``train``'s ``history.csv``), read once."""
        if "histories" not in self._cache:
            self._cache["histories"] = {
                m: [pd.read_csv(self.path("train", "history", m, s)) for s in self.seeds]
                for m in self.methods
            }
        return self._cache["histories"]

    def not_run(self, stage_name: str, tables: dict[tuple[str, int], pd.DataFrame]) -> str | None:
        """Why ``stage_name`` was skipped (every run wrote no rows), or ``None`` if it ran.

        Args:
            tables: each run's rows.

        Raises:
            ReportError: some runs were skipped and others not, or a run wrote no rows without
                saying why in its ``summary`` output.
        """
        empty = [run for run, table in tables.items() if table.empty]
        if not empty:
            return None
        if len(empty) < len(tables):
            ran = [run for run in tables if run not in empty]
            raise ReportError(
                f"`sibnet {stage_name}` wrote no rows for {_names(empty)} but did for "
                f"{_names(ran)}; every run shares the params and the data, so some of these "
                f"outputs are stale (rerun {stage_name} for every run: snakemake --cores all, or "
                "dvc repro)"
            )
        reasons: list[str] = []
        for method, seed in empty:
            path = self.path(stage_name, "summary", method, seed)
            reason = json.loads(path.read_text(encoding="utf-8")).get("skipped")
            if not reason:
                raise ReportError(
                    f"{path}: `sibnet {stage_name}` wrote no rows for {method!r} seed {seed}, "
                    "but its summary gives no 'skipped' reason"
                )
            reasons.append(str(reason))
        return "; ".join(dict.fromkeys(reasons))

    def examples(
        self, stage_name: str, what: str, check: Callable[[dict[str, np.ndarray]], list[str]]
    ) -> dict[str, dict[str, np.ndarray]]:
        """Each method's ``examples`` arrays of ``stage_name`` (first seed), which must show the
        same images.

        Args:
            what: how an error names them, e.g. ``overlay examples``.
            check: the image ids of one method's arrays.

        Raises:
            ReportError: a method's examples show other images than the first method's (when
                the first shows any).
        """
        first_seed = self.seeds[0]
        examples = {
            m: dict(np.load(self.path(stage_name, "examples", m, first_seed))) for m in self.methods
        }
        ids = check(next(iter(examples.values())))
        for method, arrays in examples.items():
            if ids and check(arrays) != ids:
                raise ReportError(f"the {what} of {method!r} show other images")
        return examples


def _names(runs: list[tuple[str, int]]) -> str:
    return ", ".join(f"{m}/seed{s}" for m, s in runs)
