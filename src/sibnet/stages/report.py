"""``sibnet report``: this run's version of the paper's tables and figures, all runs together.

Reads, for every method of ``pipeline.methods`` and seed of ``pipeline.seeds``, the outputs of
``train`` (history), ``evaluate`` (predictions), ``robustness`` (noisy predictions) and
``saliency`` (per-map scores, overlay examples), and writes

- ``results/report/`` — ``summary.md`` (the tables below, with the figures), the tables as CSV
  (``validation_auc.csv``, ``clean_auc.csv``, ``auc_under_noise.csv``, ``saliency.csv``,
  ``segmentation.csv``) and the figures
  ``auc_vs_noise.png``, ``saliency_distributions.png``, ``saliency_overlay.png``,
  ``training_curves.png``;
- ``results/metrics.json`` — the headline numbers, for ``dvc metrics show``;
- ``results/plots/auc_vs_noise.csv`` and ``results/plots/saliency.csv`` — the data of the
  ``dvc plots show`` charts declared in ``dvc.yaml``;

and logs all of it to an MLflow run (stage ``report``).

Tables: the validation macro AUC of the epoch each run kept (the model-selection criterion:
choose configurations by it, never by the test tables); clean test macro AUC; macro AUC at every
noise σ (with the noise really added and the total noise std); saliency per class and pooled —
Dice, HD95, SSIM (convex hull; the paper's protocol, never a verdict), Dice without the hull,
the pointing game and the energy-based pointing games — with the label-only prior-map and
uniform-map rows, and a split by correctly and wrongly classified images; segmentation transfer
(Dice / HD95 per mode). Each gives the mean over seeds, its percentile-bootstrap interval over
test images, the standard deviation over seeds, and the difference Δ from ``report.reference``
with its interval over seeds and test images and a Holm-corrected verdict per table (none with
one seed; see :mod:`sibnet.metrics.comparison`).

Stages that had nothing to do on this dataset: ``segment`` with an empty
``segment.structures`` (no organ masks) and ``saliency`` when no test image has a positive
finding with a lesion mask write no rows, and their summary JSON gives a ``skipped`` reason.
The report then replaces that stage's table in ``summary.md`` by a sentence giving the reason,
leaves its figures out, writes its CSV table (and, for saliency, ``results/plots/saliency.csv``)
with the header only, and leaves its entry (``saliency`` / ``segmentation``) out of
``metrics.json``, whose ``not_run`` maps each such entry to the reason (``{}`` when everything
ran). Since every run shares params and data, runs must agree on whether a stage was skipped;
a :class:`ReportError` says which runs disagree otherwise.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from sibnet.config import Params, segment_modes
from sibnet.dag import MODELS, RESULTS, gathered, stage
from sibnet.errors import SibnetError
from sibnet.files import atomic_dir, atomic_file, sha256_file, write_json
from sibnet.metrics.comparison import (
    COMPARISON_COLUMNS,
    NO_SEED_VERDICT,
    VERDICT_COLUMNS,
    add_verdicts,
    compare_aucs,
    compare_scores,
)
from sibnet.plots.report import (
    plot_auc_vs_noise,
    plot_saliency_distributions,
    plot_saliency_overlay,
    plot_segmentation_overlay,
    plot_training_summary,
)
from sibnet.predictions import read_predictions
from sibnet.tracking import start_run

__all__ = ["REPORT_FILES", "ReportError", "report"]

log = logging.getLogger(__name__)

SALIENCY_SCORES = {
    "dice": "Dice",
    "hd95": "HD95 (px)",
    "ssim": "SSIM (paper protocol)",
    "dice_raw": "Dice, no hull",
    "pointing_hit": "pointing game",
    "energy_lesion": "energy in lesion",
    "energy_body": "energy in body",
}
"""Saliency scores in the report, with their column titles."""

SALIENCY_VERDICTS = ("dice", "energy_lesion")
"""The localisation scores that get verdicts (SSIM never: it rewards empty maps)."""

REFERENCE_ROWS = {"prior": "prior map", "uniform": "uniform map"}
"""The label-only reference maps' rows in the saliency tables (``map`` → row name)."""

POOLED = "all"
"""The ``class`` of the saliency rows pooled over classes."""


REPORT_FILES = (
    "summary.md",
    "validation_auc.csv",
    "clean_auc.csv",
    "auc_under_noise.csv",
    "saliency.csv",
    "auc_vs_noise.png",
    "saliency_distributions.png",
    "saliency_overlay.png",
    "training_curves.png",
    "segmentation.csv",
    "segmentation_overlay.png",
)
"""What ``results/report/`` can hold: the overlay figures only if some image was shown; the
saliency figures and the segmentation overlay not when that stage was skipped (its CSV table is
still written, header only)."""


class ReportError(ValueError, SibnetError):
    """A run's output that the report needs is missing or inconsistent with the others."""


def _runs(params: Params) -> list[tuple[str, int]]:
    return [(m, s) for m in params.pipeline.methods for s in params.pipeline.seeds]


def _path(root: Path, root_template: str, stage_name: str, output: str, method: str, seed: int):
    path = root / gathered(stage(stage_name), root_template, output, method, seed)
    if not path.exists():
        raise ReportError(
            f"{path}: missing; it is written by `sibnet {stage_name}` for method {method!r} "
            f"seed {seed} (run the whole pipeline: snakemake --cores all, or dvc repro)"
        )
    return path


def _not_run(
    stage_name: str,
    tables: dict[tuple[str, int], pd.DataFrame],
    summary: Callable[[str, int], Path],
) -> str | None:
    """Why ``stage_name`` was skipped (every run wrote no rows), or ``None`` if it ran.

    Args:
        tables: each run's rows.
        summary: the path of a run's summary JSON (read for its ``skipped`` reason).

    Raises:
        ReportError: some runs were skipped and others not, or a run wrote no rows without
            saying why.
    """
    empty = [run for run, table in tables.items() if table.empty]
    if not empty:
        return None
    if len(empty) < len(tables):
        ran = [run for run in tables if run not in empty]

        def names(runs: list[tuple[str, int]]) -> str:
            return ", ".join(f"{m}/seed{s}" for m, s in runs)

        raise ReportError(
            f"`sibnet {stage_name}` wrote no rows for {names(empty)} but did for {names(ran)}; "
            "every run shares the params and the data, so some of these outputs are stale "
            f"(rerun {stage_name} for every run: snakemake --cores all, or dvc repro)"
        )
    reasons: list[str] = []
    for method, seed in empty:
        path = summary(method, seed)
        reason = json.loads(path.read_text(encoding="utf-8")).get("skipped")
        if not reason:
            raise ReportError(
                f"{path}: `sibnet {stage_name}` wrote no rows for {method!r} seed {seed}, but "
                "its summary gives no 'skipped' reason"
            )
        reasons.append(str(reason))
    return "; ".join(dict.fromkeys(reasons))


def _frames(frames: list[pd.DataFrame], columns: Sequence[str]) -> pd.DataFrame:
    """``frames`` concatenated; an empty table with ``columns`` when there are none."""
    if not frames:
        return pd.DataFrame(columns=list(columns))
    return pd.concat(frames, ignore_index=True)


def _compare(
    rows: pd.DataFrame,
    scores: Sequence[str],
    *,
    keys: tuple[str, ...],
    reference: str,
    boot: dict[str, Any],
    **labels: str,
) -> pd.DataFrame:
    """:func:`compare_scores` of each of ``scores`` (with a ``score`` column, after ``labels``);
    no rows for no input rows."""
    columns = [*COMPARISON_COLUMNS, *labels, "score"]
    if rows.empty:
        return pd.DataFrame(columns=columns)
    return _frames(
        [
            compare_scores(rows, score, keys=keys, reference=reference, **boot).assign(
                **labels, score=score
            )
            for score in scores
        ],
        columns,
    )


NOISE_LEVELS = ("sigma", "noise_mean_measured", "noise_std_measured", "total_noise_std")
"""Columns of the robustness table the noise table carries per σ (what was really added)."""


def _saliency_table(
    rows: pd.DataFrame, reference: str, boot: dict[str, Any], methods: Sequence[str]
) -> pd.DataFrame:
    """Every saliency score per class (and pooled: ``class`` :data:`POOLED`), for every method
    and the reference maps (:data:`REFERENCE_ROWS`, taken from the first run: they are the same
    for all), with Holm verdicts on :data:`SALIENCY_VERDICTS` per class."""
    columns = [*COMPARISON_COLUMNS, "class", "score", *VERDICT_COLUMNS]
    if rows.empty:
        return pd.DataFrame(columns=columns)
    gradcam = rows[rows["map"] == "gradcam"]
    first = rows[
        (rows["method"] == rows["method"].iloc[0]) & (rows["seed"] == rows["seed"].iloc[0])
    ]
    _check_reference_maps(rows, first)
    every = pd.concat(
        [gradcam, *(first[first["map"] == m].assign(method=n) for m, n in REFERENCE_ROWS.items())],
        ignore_index=True,
    )
    parts = [
        _compare(
            every if name == POOLED else every[every["class"] == name],
            list(SALIENCY_SCORES),
            keys=("id", "class"),
            reference=reference,
            boot=boot,
            **{"class": name},
        )
        for name in [POOLED, *dict.fromkeys(gradcam["class"])]
    ]
    table = pd.concat(parts, ignore_index=True)
    family = (
        table["method"].isin(methods)
        & table["score"].isin(SALIENCY_VERDICTS)
        & (table["class"] != POOLED)
    )
    return add_verdicts(table, confidence=boot["confidence"], reference=reference, family=family)[
        columns
    ]


def _check_reference_maps(rows: pd.DataFrame, first: pd.DataFrame) -> None:
    """Refuse runs whose reference-map scores differ from the first run's (they depend on the
    data only, so a difference means stale outputs)."""
    columns = ["id", "class", "map", *SALIENCY_SCORES]

    def scores(block: pd.DataFrame) -> pd.DataFrame:
        block = block[block["map"] != "gradcam"][columns]
        return block.sort_values(["id", "class", "map"]).reset_index(drop=True)

    expected = scores(first)
    for (method, seed), block in rows.groupby(["method", "seed"], sort=False):
        found = scores(block)
        same = found.shape == expected.shape and all(
            found[c].equals(expected[c])
            if c in ("id", "class", "map")
            else np.allclose(found[c], expected[c], equal_nan=True)
            for c in columns
        )
        if not same:
            raise ReportError(
                f"the prior/uniform reference-map scores of {method}/seed{seed} differ from "
                f"{first['method'].iloc[0]}/seed{first['seed'].iloc[0]}'s; they depend on the "
                "data only, so some saliency outputs are stale (rerun saliency for every run: "
                "snakemake --cores all, or dvc repro)"
            )


def report(
    params: Params,
    *,
    results: Path,
    models: Path,
    report: Path,
    metrics: Path,
    noise_plot: Path,
    saliency_plot: Path,
) -> dict[str, Any]:
    """Build the report of every method × seed (see the module docstring).

    Args:
        params: validated params (``report``, ``pipeline`` and the scoring sections are used).
        results: ``results/<dataset>``, the per-run results folder.
        models: ``models/<dataset>``, the per-run models folder (training histories).
        report: output folder ``results/report``.
        metrics: output ``results/metrics.json``.
        noise_plot, saliency_plot: output plot data (CSV) for ``dvc plots``.

    Returns:
        The contents of ``metrics``.

    Raises:
        ReportError: a run's output is missing, or runs disagree on the test images or on
            whether saliency or segmentation was skipped.
    """
    settings = params.report
    boot = {
        "resamples": settings.bootstrap,
        "confidence": settings.confidence,
        "seed": settings.seed,
    }
    runs = _runs(params)
    methods = list(params.pipeline.methods)
    inputs: list[Path] = []

    def need(root: Path, template: str, stage_name: str, output: str, m: str, s: int) -> Path:
        path = _path(root, template, stage_name, output, m, s)
        inputs.append(path)
        return path

    # Clean test AUC, from the evaluate stage's predictions.
    clean: dict[str, list[np.ndarray]] = {m: [] for m in methods}
    classes: list[str] | None = None
    ids0 = targets0 = None
    for m, s in runs:
        path = need(results, RESULTS, "evaluate", "predictions", m, s)
        if classes is None:
            columns = pq.read_schema(path).names  # the schema only, not the data
            classes = [c.removeprefix("prob_") for c in columns if c.startswith("prob_")]
        ids, targets, probs = read_predictions(path, classes)
        if ids0 is None:
            ids0, targets0 = ids, targets
        elif not (np.array_equal(ids, ids0) and np.array_equal(targets, targets0)):
            raise ReportError(f"{path}: scored other test images than {runs[0]}'s predictions")
        clean[m].append(probs)
    assert classes is not None and targets0 is not None
    verdicts = {"confidence": settings.confidence, "reference": settings.reference}
    clean_table = add_verdicts(
        compare_aucs(clean, targets0, reference=settings.reference, **boot), **verdicts
    )

    # AUC under Gaussian noise, from the robustness stage's predictions.
    noisy: dict[float, dict[str, list[np.ndarray]]] = {}
    for m, s in runs:
        path = need(results, RESULTS, "robustness", "predictions", m, s)
        frame = pd.read_parquet(path)
        for sigma, block in frame.groupby("sigma", sort=True):
            ids = block["id"].to_numpy()
            if not np.array_equal(ids, ids0):
                raise ReportError(f"{path}: σ={sigma:g} scored other test images than evaluate")
            probs = block[[f"prob_{c}" for c in classes]].to_numpy(np.float64)
            noisy.setdefault(float(sigma), {k: [] for k in methods})[m].append(probs)
    sigmas = sorted(noisy)
    for sigma in sigmas:
        short = [m for m in methods if len(noisy[sigma][m]) != len(params.pipeline.seeds)]
        if short:
            raise ReportError(f"σ={sigma:g} is missing from the robustness results of {short}")
    noise_table = pd.concat(
        [
            compare_aucs(noisy[sigma], targets0, reference=settings.reference, **boot).assign(
                sigma=sigma
            )
            for sigma in sigmas
        ],
        ignore_index=True,
    )
    levels = pd.read_parquet(need(results, RESULTS, "robustness", "robustness", *runs[0]))
    noise_table = add_verdicts(noise_table, **verdicts).merge(
        levels[list(NOISE_LEVELS)], on="sigma", how="left"
    )

    # Saliency agreement, from the saliency stage's per-map rows.
    first_seed = params.pipeline.seeds[0]
    saliency_parts = {
        (m, s): pd.read_parquet(need(results, RESULTS, "saliency", "saliency", m, s))
        for m, s in runs
    }
    not_run: dict[str, str] = {}
    skipped = _not_run(
        "saliency",
        saliency_parts,
        lambda m, s: need(results, RESULTS, "saliency", "summary", m, s),
    )
    examples: dict[str, dict[str, np.ndarray]] = {}
    if skipped is None:
        saliency_rows = pd.concat(saliency_parts.values(), ignore_index=True)
        examples = {
            m: dict(np.load(need(results, RESULTS, "saliency", "examples", m, first_seed)))
            for m in methods
        }
    else:
        not_run["saliency"] = skipped
        saliency_rows = next(iter(saliency_parts.values()))
        log.warning("saliency was not scored (%s): left out of the report", skipped)
    saliency_table = _saliency_table(saliency_rows, settings.reference, boot, methods)
    # Segmentation from each classifier's encoder, from the segment stage.
    segmentation_parts = {
        (m, s): pd.read_parquet(need(results, RESULTS, "segment", "segmentation", m, s))
        for m, s in runs
    }
    skipped = _not_run(
        "segment",
        segmentation_parts,
        lambda m, s: need(results, RESULTS, "segment", "summary", m, s),
    )
    segmentation_examples: dict[str, dict[str, np.ndarray]] = {}
    segmentation_rows = pd.concat(segmentation_parts.values(), ignore_index=True)
    if skipped is None:
        segmentation_examples = {
            m: dict(np.load(need(results, RESULTS, "segment", "examples", m, first_seed)))
            for m in methods
        }
    else:
        not_run["segmentation"] = skipped
        log.info("segmentation was not run (%s): left out of the report", skipped)
    segmentation_table = _frames(
        [
            _compare(
                segmentation_rows[segmentation_rows["mode"] == mode],
                ("dice", "hd95"),
                keys=("id", "structure"),
                reference=settings.reference,
                boot=boot,
                mode=mode,
            )
            for mode in segmentation_rows["mode"].unique()
        ],
        [*COMPARISON_COLUMNS, "mode", "score"],
    )
    segmentation_table = add_verdicts(
        segmentation_table, **verdicts, family=segmentation_table["score"] == "dice"
    )
    histories = {
        m: [
            pd.read_csv(need(models, MODELS, "train", "history", m, s))
            for s in params.pipeline.seeds
        ]
        for m in methods
    }

    validation_table = validation_auc_table(histories)
    summary = _metrics_json(
        params, clean_table, noise_table, saliency_table, segmentation_table, not_run
    )
    summary["validation_auc"] = {
        row["method"]: {k: _number(row[k]) for k in ("mean", "sd", "min", "max")}
        for _, row in validation_table.iterrows()
    }
    with start_run(params, stage="report") as tracker, atomic_dir(report) as folder:
        tracker.log_params(
            {"report": settings.model_dump(mode="json"), "pipeline": params.pipeline.model_dump()}
        )
        gradcam_rows = saliency_rows[saliency_rows["map"] == "gradcam"]
        figures = _figures(folder, params, noise_table, gradcam_rows, examples, histories)
        figures.update(_segmentation_figure(folder, params, segmentation_examples))
        for name, table in (
            ("validation_auc.csv", validation_table),
            ("clean_auc.csv", clean_table),
            ("auc_under_noise.csv", noise_table),
            ("saliency.csv", saliency_table),
            ("segmentation.csv", segmentation_table),
        ):
            table.to_csv(folder / name, index=False, float_format="%.6f")
        markdown = _markdown(
            params,
            validation_table,
            clean_table,
            noise_table,
            saliency_table,
            saliency_rows,
            segmentation_table,
            figures,
            inputs,
            not_run,
        )
        (folder / "summary.md").write_text(markdown, encoding="utf-8")
        for path in sorted(folder.iterdir()):
            tracker.log_artifact(path, artifact_path="report")
        tracker.log_metrics(summary)
    write_json(metrics, summary)
    _write_plot_data(noise_plot, saliency_plot, noise_table, saliency_table, methods)
    log.info("report of %d runs → %s, %s", len(runs), report / "summary.md", metrics)
    return summary


def _write_plot_data(
    noise_plot: Path,
    saliency_plot: Path,
    noise_table: pd.DataFrame,
    saliency_table: pd.DataFrame,
    methods: Sequence[str],
) -> None:
    wide = noise_table.pivot(index="sigma", columns="method", values="mean")[list(methods)]
    with atomic_file(noise_plot) as tmp:
        wide.reset_index().to_csv(tmp, index=False, float_format="%.6f")
    pooled = saliency_table[saliency_table["class"] == POOLED]
    if pooled.empty:  # saliency not scored: the header only
        bars = pd.DataFrame(columns=["method", *SALIENCY_SCORES])
    else:
        bars = pooled.pivot(index="method", columns="score", values="mean")
        bars = bars.loc[list(methods), list(SALIENCY_SCORES)].reset_index()
    with atomic_file(saliency_plot) as tmp:
        bars.to_csv(tmp, index=False, float_format="%.6f")


def _number(value: float) -> float | None:
    return None if value is None or not math.isfinite(value) else round(float(value), 6)


def _entry(row: pd.Series) -> dict[str, float | str | None]:
    """A comparison row's numbers (JSON-ready: ``None`` where undefined) and its verdict."""
    entry: dict[str, float | str | None] = {
        k: _number(row[k]) for k in COMPARISON_COLUMNS if k not in ("method", "n_seeds", "n")
    }
    if "verdict" in row.index:
        entry["p_holm"] = _number(row["p_holm"])
        entry["verdict"] = row["verdict"] or None
    return entry


def _metrics_json(
    params: Params,
    clean: pd.DataFrame,
    noise: pd.DataFrame,
    saliency: pd.DataFrame,
    segmentation: pd.DataFrame,
    not_run: dict[str, str],
) -> dict[str, Any]:
    """The headline numbers; ``saliency`` / ``segmentation`` are left out when that stage was
    skipped, and ``not_run`` maps each left-out entry to the reason (``{}`` when all ran).

    ``saliency`` holds each method's scores pooled over classes; ``saliency_per_class`` the
    same per class, with the reference maps (``prior map``, ``uniform map``) beside the
    methods.
    """
    pooled = saliency[
        (saliency["class"] == POOLED) & saliency["method"].isin(params.pipeline.methods)
    ]
    summary = {
        "dataset": params.prepare.dataset,
        "reference": params.report.reference,
        "seeds": list(params.pipeline.seeds),
        "confidence": params.report.confidence,
        "clean_auc": {row["method"]: _entry(row) for _, row in clean.iterrows()},
        "noise_auc": {
            method: {f"sigma_{row['sigma']:g}": _entry(row) for _, row in block.iterrows()}
            for method, block in noise.groupby("method", sort=False)
        },
        "saliency": {
            method: {row["score"]: _entry(row) for _, row in block.iterrows()}
            for method, block in pooled.groupby("method", sort=False)
        },
        "saliency_per_class": {
            name: {
                method: {row["score"]: _entry(row) for _, row in rows.iterrows()}
                for method, rows in block.groupby("method", sort=False)
            }
            for name, block in saliency[saliency["class"] != POOLED].groupby("class", sort=False)
        },
        "segmentation": {
            method: {
                mode: {row["score"]: _entry(row) for _, row in rows.iterrows()}
                for mode, rows in block.groupby("mode", sort=False)
            }
            for method, block in segmentation.groupby("method", sort=False)
        },
        "not_run": dict(not_run),
    }
    for entry in not_run:
        del summary[entry]
    if "saliency" in not_run:
        del summary["saliency_per_class"]
    return summary


def _figures(
    folder: Path,
    params: Params,
    noise: pd.DataFrame,
    rows: pd.DataFrame,
    examples: dict[str, dict[str, np.ndarray]],
    histories: dict[str, list[pd.DataFrame]],
) -> dict[str, str]:
    """Draw the report's figures into ``folder``; returns file name → caption."""
    dataset = params.prepare.dataset
    seeds = params.pipeline.seeds
    figures: dict[str, str] = {}
    plot_auc_vs_noise(
        noise.rename(columns={"mean": "macro_auc"}),
        folder / "auc_vs_noise.png",
        f"{dataset}: test macro AUC under Gaussian noise (mean over {len(seeds)} seed(s))",
    )
    figures["auc_vs_noise.png"] = "Test macro AUC against the noise σ, with 95% bootstrap CIs."
    if not rows.empty:  # else saliency was not scored
        plot_saliency_distributions(
            rows, folder / "saliency_distributions.png", f"{dataset}: saliency agreement per map"
        )
        figures["saliency_distributions.png"] = (
            "Distribution over scored maps (all seeds) of Dice, HD95 and SSIM of the convex hull."
        )
    first = next(iter(examples.values()), {"id": []})
    ids = [str(i) for i in first["id"]]
    if ids:
        for method, arrays in examples.items():
            if [str(i) for i in arrays["id"]] != ids:
                raise ReportError(f"the overlay examples of {method!r} show other images")
        plot_saliency_overlay(
            first["image"],
            first["mask"],
            {m: a["saliency"] for m, a in examples.items()},
            {m: a["hull"] for m, a in examples.items()},
            [f"{i} · {c}" for i, c in zip(ids, first["class"], strict=True)],
            folder / "saliency_overlay.png",
            f"{dataset}: Grad-CAM (seed {seeds[0]}), ground truth and convex hull",
        )
        figures["saliency_overlay.png"] = (
            f"The same {len(ids)} test images for every method (seed {seeds[0]}): Grad-CAM map "
            "of the finding's class, ground-truth contour, hull of the binarised map."
        )
    plot_training_summary(histories, folder / "training_curves.png", f"{dataset}: training")
    figures["training_curves.png"] = "Training loss and validation macro AUC per epoch."
    return figures


def _segmentation_figure(
    folder: Path, params: Params, examples: dict[str, dict[str, np.ndarray]]
) -> dict[str, str]:
    """The segmentation overlay: every method in the first mode, the reference in the others
    (nothing without examples: segmentation was not run)."""
    modes = segment_modes(params, params.report.reference)
    first = next(iter(examples.values()), {"id": []})
    ids = [str(i) for i in first["id"]]
    if not ids:
        return {}
    predictions: dict[str, np.ndarray] = {}
    for method, arrays in examples.items():
        if [str(i) for i in arrays["id"]] != ids:
            raise ReportError(f"the segmentation examples of {method!r} show other images")
        predictions[f"{method} · {modes[0]}"] = arrays[f"pred_{modes[0]}"]
    reference = examples[params.report.reference]
    for mode in modes[1:]:
        predictions[f"{params.report.reference} · {mode}"] = reference[f"pred_{mode}"]
    plot_segmentation_overlay(
        first["image"],
        first["truth"],
        predictions,
        ids,
        folder / "segmentation_overlay.png",
        f"{params.prepare.dataset}: segmentation ({', '.join(first['structures'])}), "
        f"seed {params.pipeline.seeds[0]}",
    )
    return {
        "segmentation_overlay.png": (
            f"Segmentation of the same {len(ids)} test images: every method's "
            f"{modes[0]} encoder, and the reference method's other modes; ground truth solid, "
            "prediction dashed."
        )
    }


def _intervals_text(params: Params) -> str:
    """What every interval and verdict of the report covers (the summary's first paragraph)."""
    settings = params.report
    seeds = params.pipeline.seeds
    pct = f"{100 * settings.confidence:g}%"
    alpha = f"{1 - settings.confidence:g}"
    text = (
        f"{len(params.pipeline.methods)} methods × {len(seeds)} seed(s) "
        f"({', '.join(map(str, seeds))}). Scores are means over seeds. **CI**: {pct} "
        f"percentile-bootstrap interval over test images ({settings.bootstrap} resamples, seed "
        f"{settings.seed}; AUC resamples stratified by label pattern, per-item scores resampled "
        "by image) for *these trained networks*: it does not cover training randomness. "
        "**SD**: standard deviation over seeds. **Δ**: difference from the reference method "
        f"`{settings.reference}`; its {pct} interval covers training randomness *and* test-image "
        "sampling (a seed-level Welch t-interval with the paired image-bootstrap variance "
        "added; see `sibnet.metrics.comparison`). **Verdict** *higher* / *lower*: on test "
        "images like these and training runs like these seeds, the method's expected score "
        f"differs from `{settings.reference}`'s, at family-wise error {alpha} within its table "
        "(Holm's step-down correction over the table's verdicts; *p* is Holm-adjusted). "
    )
    if len(seeds) < 2:
        text += (
            "**With one seed there is no method-level verdict**: a single trained network per "
            "method compares two networks, not two methods (two seeds of one method differ as "
            "much as methods do). Δ is shown with its image-only interval, conditional on "
            "these networks; run at least 2 seeds (`pipeline.seeds`) for verdicts."
        )
    return text


def _delta_cells(row: Any, digits: int = 3) -> str:
    """``Δ | interval | p | verdict`` cells of a comparison row (the image-only interval, marked
    so, when there is no seed-level one)."""
    delta = _value(row["delta"], digits, sign=True)
    interval = _delta_interval(row, digits)
    p = row["p_holm"] if "p_holm" in row.index else float("nan")
    p_text = f"{p:.3g}" if math.isfinite(p) else "–"
    return f"{delta} | {interval} | {p_text} | {row['verdict'] or ''}"


def _segmentation_markdown(params: Params, table: pd.DataFrame) -> str:
    settings = params.segment
    ref = params.report.reference
    pct = f"{100 * params.report.confidence:g}%"
    lines = [
        "## Segmentation from the classifiers' encoders",
        "",
        f"A U-Net-style decoder trained on {', '.join(settings.structures)} "
        f"({settings.epochs} epochs, the first {settings.max_train_images or 'all'} annotated "
        "training images, Dice + BCE), under each method's encoder: *frozen* (trained encoder "
        "fixed — the paper's transfer recipe), *finetune* (trained encoder learns too), "
        "*scratch* (the same network from random initialisation); "
        f"{', '.join(settings.modes)} for every method, "
        f"{', '.join(settings.reference_modes) or 'nothing more'} also for `{ref}`. "
        "Cells: mean [CI] over test images × structures, resampled by image (an image's "
        "structures together); HD95 in pixels, its Δ on the structures defined for both. "
        "Verdicts on Δ Dice, Holm-corrected over the table's rows.",
        "",
        f"| method | mode | seeds | Dice | {pct} CI | HD95 (px) | {pct} CI | Δ Dice vs {ref} | "
        "interval of Δ | p (Holm) | verdict |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for (method, mode), block in table.groupby(["method", "mode"], sort=False):
        block = block.set_index("score")
        d, h = block.loc["dice"], block.loc["hd95"]
        delta = "reference | | |" if method == ref else _delta_cells(d)
        lines.append(
            f"| {method} | {mode} | {int(d['n_seeds'])} | {_value(d['mean'])} | {_ci(d)} | "
            f"{_value(h['mean'])} | {_ci(h)} | {delta} |"
        )
    return "\n".join(lines) + "\n"


def _ci(row: Any, low: str = "ci_low", high: str = "ci_high", digits: int = 3) -> str:
    a, b = row[low], row[high]
    if not (math.isfinite(a) and math.isfinite(b)):
        return "–"
    return f"[{a:.{digits}f}, {b:.{digits}f}]"


def _value(value: float, digits: int = 3, sign: bool = False) -> str:
    if not math.isfinite(value):
        return "–"
    return f"{value:+.{digits}f}" if sign else f"{value:.{digits}f}"


VALIDATION_COLUMNS = ("method", "n_seeds", "mean", "sd", "min", "max", "best_epochs")


def validation_auc_table(histories: dict[str, list[pd.DataFrame]]) -> pd.DataFrame:
    """The validation macro AUC of the epoch each run kept (its best), per method over seeds.

    Training keeps the epoch with the highest validation macro AUC (:mod:`sibnet.stages.train`),
    so this is each run's selection score; configurations are chosen by it, never by the test
    tables. Columns :data:`VALIDATION_COLUMNS`: the mean, SD (over seeds; NaN with one), lowest
    and highest of the kept epochs' AUCs, and the kept epochs (space-separated, in seed order).
    """
    rows = []
    for method, frames in histories.items():
        best = [frame.loc[frame["val_auc"].fillna(-np.inf).idxmax()] for frame in frames]
        aucs = np.array([float(row["val_auc"]) for row in best])
        rows.append(
            {
                "method": method,
                "n_seeds": len(aucs),
                "mean": float(np.mean(aucs)),
                "sd": float(np.std(aucs, ddof=1)) if len(aucs) > 1 else float("nan"),
                "min": float(np.min(aucs)),
                "max": float(np.max(aucs)),
                "best_epochs": " ".join(str(int(row["epoch"])) for row in best),
            }
        )
    return pd.DataFrame(rows, columns=list(VALIDATION_COLUMNS))


def _markdown(
    params: Params,
    validation: pd.DataFrame,
    clean: pd.DataFrame,
    noise: pd.DataFrame,
    saliency: pd.DataFrame,
    rows: pd.DataFrame,
    segmentation: pd.DataFrame,
    figures: dict[str, str],
    inputs: list[Path],
    not_run: dict[str, str],
) -> str:
    settings = params.report
    ref = settings.reference
    pct = f"{100 * settings.confidence:g}%"
    lines = [
        f"# sibnet report: dataset `{params.prepare.dataset}`",
        "",
        _intervals_text(params),
        "",
        "## Validation macro AUC (model selection)",
        "",
        "The validation macro AUC of the epoch each run kept. Choose between configurations by "
        "this table; the test tables below are for reporting only.",
        "",
        "| method | seeds | mean | SD | lowest | highest | kept epochs |",
        "|---|---|---|---|---|---|---|",
    ]
    for _, r in validation.iterrows():
        lines.append(
            f"| {r['method']} | {r['n_seeds']} | {_value(r['mean'])} | {_value(r['sd'])} | "
            f"{_value(r['min'])} | {_value(r['max'])} | {r['best_epochs']} |"
        )
    lines += [
        "",
        "## Clean test macro AUC",
        "",
        f"| method | seeds | macro AUC | {pct} CI | SD | Δ vs {ref} | interval of Δ | "
        "p (Holm) | verdict |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for _, r in clean.iterrows():
        delta = "reference | | |" if r["method"] == ref else _delta_cells(r)
        lines.append(
            f"| {r['method']} | {r['n_seeds']} | {_value(r['mean'])} | {_ci(r)} | "
            f"{_value(r['sd'])} | {delta} |"
        )
    lines += _noise_markdown(params, noise)
    lines += ["", "## Saliency agreement with the lesion masks", ""]
    if "saliency" in not_run:
        lines.append(f"Saliency agreement was not scored: {not_run['saliency']}.")
    else:
        lines += _saliency_markdown(params, saliency, rows)
    if "segmentation" in not_run:
        lines += [
            "",
            "## Segmentation from the classifiers' encoders",
            "",
            f"Segmentation was not run: {not_run['segmentation']}.",
        ]
    else:
        lines += ["", *_segmentation_markdown(params, segmentation).splitlines()]
    lines += ["", "## Figures", ""]
    for name, caption in figures.items():
        lines += [f"![{caption}]({name})", "", f"*{caption}*", ""]
    lines += [
        "## Inputs",
        "",
        "Every file this report was computed from, with its SHA-256:",
        "",
        "| file | sha256 |",
        "|---|---|",
    ]
    lines += [f"| `{path}` | `{sha256_file(path)}` |" for path in inputs]
    return "\n".join(lines) + "\n"


def _noise_markdown(params: Params, noise: pd.DataFrame) -> list[str]:
    """The noise section: AUC per σ, the noise really added, and Δ with verdicts."""
    ref = params.report.reference
    pct = f"{100 * params.report.confidence:g}%"
    levels = noise.drop_duplicates("sigma").sort_values("sigma")
    sigmas = levels["sigma"].tolist()
    header = " | ".join(f"σ = {s:g}" for s in sigmas)

    def row_of(name: str, column: str, digits: int = 4) -> str:
        return f"| {name} | " + " | ".join(_value(v, digits) for v in levels[column]) + " |"

    lines = [
        "",
        "## Test macro AUC under Gaussian noise",
        "",
        f"Noise N(0, σ²) on intensities in [0, 1]"
        f"{', clipped to [0, 1]' if params.robustness.clip else ''} "
        f"(noise seed {params.robustness.noise_seed}); cells: AUC [{pct} CI over test images]. "
        "The first rows say what was really added (after clipping) and the total pixel noise "
        "√(σ₀² + added std²) where the dataset's own noise σ₀ is known (the phantom's "
        "`noise_std`): a σ far below σ₀ leaves the images nearly clean. Clipping at the dark "
        "background keeps only the positive half of the noise there, so the added noise is "
        "one-sided (mean above 0, std below σ).",
        "",
        f"| method | {header} |",
        "|---|" + "---|" * len(sigmas),
        row_of("*added noise, mean*", "noise_mean_measured"),
        row_of("*added noise, std*", "noise_std_measured"),
        row_of("*total noise std*", "total_noise_std"),
    ]
    for method, block in noise.groupby("method", sort=False):
        cells = [f"{_value(r['mean'])} {_ci(r)}" for _, r in block.sort_values("sigma").iterrows()]
        lines.append(f"| {method} | {' | '.join(cells)} |")
    others = [m for m in params.pipeline.methods if m != ref]
    lines += [
        "",
        f"Δ macro AUC vs `{ref}` [interval of Δ] and verdict (Holm over all "
        f"{len(others) * len(sigmas)} cells of this table)"
        + (":" if others else ": no other method."),
        "",
        f"| method | {header} |",
        "|---|" + "---|" * len(sigmas),
    ]
    for method, block in noise.groupby("method", sort=False):
        if method == ref:
            continue
        cells = []
        for _, r in block.sort_values("sigma").iterrows():
            verdict = "" if r["verdict"] == NO_SEED_VERDICT else f" {r['verdict']}"
            cells.append(f"{_value(r['delta'], sign=True)} {_delta_interval(r)}{verdict}")
        lines.append(f"| {method} | {' | '.join(cells)} |")
    return lines


def _saliency_markdown(params: Params, saliency: pd.DataFrame, rows: pd.DataFrame) -> list[str]:
    """The saliency section's lines after its heading: a table per class, pooled last, and
    the split by correctly and wrongly classified images."""
    ref = params.report.reference
    methods = list(params.pipeline.methods)
    gradcam = rows[rows["map"] == "gradcam"]
    titles = [SALIENCY_SCORES[s] for s in SALIENCY_SCORES]
    layer = params.saliency.layer or "the last feature map"
    lines = [
        f"Grad-CAM map ({layer}) of each positive finding, binarised "
        f"({params.saliency.threshold}), convex hull, against the lesion mask. Cells: mean "
        "[CI] over scored maps, resampled by image; HD95 in pixels, over maps where it is "
        "defined (Δ on the maps defined for both methods). *pointing game*: share of maps whose "
        "maximum lies in the mask (ties shared); *energy in lesion* / *in body*: share of the "
        "map's positive mass inside the lesion / inside the body (the energy-based pointing "
        "game). **SSIM** of the binary masks is the paper's protocol, reported as such; it "
        "rewards empty and small maps (see the *uniform map* row, an empty binarisation), so no "
        "verdict rests on it. Reference rows: **prior map** — the class's mean training mask, "
        "the same for every image (what the label and the anatomy give without looking); "
        "**uniform map** — a constant map (chance level). Verdicts on Δ Dice and Δ energy in "
        "lesion per class, Holm-corrected over all of them; the pooled table mixes classes "
        "whose masks differ in size (a heart-sized mask is easy), so it carries none.",
        "",
    ]
    classes = [c for c in dict.fromkeys(saliency["class"]) if c != POOLED] + [POOLED]
    for name in classes:
        block = saliency[saliency["class"] == name]
        lines += [
            f"### {'All classes pooled' if name == POOLED else name}",
            "",
            "| map | seeds | maps (empty, negligible) | " + " | ".join(titles) + f" | Δ Dice vs "
            f"{ref} [interval], verdict | Δ energy in lesion [interval], verdict |",
            "|---|---|---|" + "---|" * (len(titles) + 2),
        ]
        for method, rows_of in block.groupby("method", sort=False):
            rows_of = rows_of.set_index("score")
            cells = [
                f"{_value(rows_of.loc[s, 'mean'])} {_ci(rows_of.loc[s])}" for s in SALIENCY_SCORES
            ]
            if method in methods:
                maps = gradcam[gradcam["method"] == method]
                if name != POOLED:
                    maps = maps[maps["class"] == name]
                count = (
                    f"{len(maps)} ({int(maps['empty_binarisation'].sum())}, "
                    f"{int(maps['negligible'].sum())})"
                )
                deltas = [
                    ""
                    if method == ref
                    else f"{_value(rows_of.loc[s, 'delta'], sign=True)} "
                    f"{_delta_interval(rows_of.loc[s])} {rows_of.loc[s, 'verdict']}".rstrip()
                    for s in SALIENCY_VERDICTS
                ]
                label = f"{method} (reference)" if method == ref else method
            else:
                count, deltas, label = "", ["", ""], f"*{method}*"
            seeds = int(rows_of.loc["dice", "n_seeds"]) if method in methods else "–"
            lines.append(
                f"| {label} | {seeds} | {count} | {' | '.join(cells)} | {' | '.join(deltas)} |"
            )
        lines.append("")
    lines += _correct_split_markdown(gradcam, methods)
    return lines


def _delta_interval(row: Any, digits: int = 3) -> str:
    """Δ's interval over seeds and images, or its image-only interval marked so (one seed)."""
    if math.isfinite(row["delta_ci_low"]):
        return _ci(row, "delta_ci_low", "delta_ci_high", digits)
    return _ci(row, "image_delta_ci_low", "image_delta_ci_high", digits) + " (images only)"


def _correct_split_markdown(gradcam: pd.DataFrame, methods: Sequence[str]) -> list[str]:
    """Dice and energy in lesion of correctly and wrongly classified images, per method."""
    lines = [
        "### Correctly and wrongly classified images",
        "",
        "Grad-CAM maps of images whose finding was classified correctly (the arg-max class, or "
        "probability ≥ `evaluate.threshold` for a multi-label task) and wrongly, all seeds "
        "pooled; *negligible*: maps whose maximum before scaling is at most "
        "`saliency.negligible` × the run's median (min–max scaling would make them look "
        "confident).",
        "",
        "| method | correct maps | Dice | energy in lesion | wrong maps | Dice | energy in lesion "
        "| negligible maps |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for method in methods:
        own = gradcam[gradcam["method"] == method]
        right, wrong = own[own["correct"]], own[~own["correct"]]
        lines.append(
            f"| {method} | {len(right)} | {_value(right['dice'].mean())} | "
            f"{_value(right['energy_lesion'].mean())} | {len(wrong)} | "
            f"{_value(wrong['dice'].mean())} | {_value(wrong['energy_lesion'].mean())} | "
            f"{int(own['negligible'].sum())} |"
        )
    return lines
