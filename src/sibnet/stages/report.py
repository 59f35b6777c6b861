"""``sibnet report``: this run's version of the paper's tables and figures, all runs together.

The report is the list of sections :data:`sibnet.report.sections.SECTIONS` (validation AUC,
clean test AUC, AUC under noise, saliency agreement, training curves, segmentation transfer).
Each reads its stages' outputs for every method of ``pipeline.methods`` and seed of
``pipeline.seeds`` and returns its tables, figures, Markdown and ``metrics.json`` entries
(:class:`~sibnet.report.section.SectionOutput`); this stage writes them:

- ``results/report/`` — ``summary.md`` (every section's tables, the figures with their
  captions, and every input file with its SHA-256), the sections' tables as CSV and their
  figures (:data:`REPORT_FILES` lists what it can hold);
- ``results/metrics.json`` — the headline numbers, for ``dvc metrics show``: ``dataset``,
  ``reference``, ``seeds``, ``confidence``, every section's entries, and ``not_run``;
- ``results/plots/auc_vs_noise.csv`` and ``results/plots/saliency.csv`` — the data of the
  ``dvc plots show`` charts declared in ``dvc.yaml``;

and logs all of it to an MLflow run (stage ``report``).

Each comparison gives the mean over seeds, its percentile-bootstrap interval over test images,
the standard deviation over seeds, and the difference Δ from ``report.reference`` with its
interval over seeds and test images and a Holm-corrected verdict per table (none with one seed;
see :mod:`sibnet.metrics.comparison`).

A section whose stage had nothing to do on this dataset (``segment`` with an empty
``segment.structures``, ``saliency`` when no test image has a positive finding with a lesion
mask: their summary JSON gives a ``skipped`` reason) puts the reason in ``summary.md`` instead
of its tables, draws no figures, writes its CSV tables with the header only and leaves its
entries out of ``metrics.json``, whose ``not_run`` maps the section's name (``saliency`` /
``segmentation``) to the reason (``{}`` when everything ran). Since every run shares params and
data, runs must agree on whether a stage was skipped; a :class:`ReportError` says which runs
disagree otherwise.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pandas as pd

from sibnet.config import Params
from sibnet.files import atomic_dir, atomic_file, write_json
from sibnet.report.context import ReportContext
from sibnet.report.section import Figure, ReportError, Section, SectionOutput
from sibnet.report.sections import SECTIONS
from sibnet.report.summary import SUMMARY_FILE, summary_markdown
from sibnet.tracking import start_run

__all__ = ["CONDITIONAL_FILES", "REPORT_FILES", "ReportError", "report"]

log = logging.getLogger(__name__)

REPORT_FILES = (SUMMARY_FILE.name, *(f.name for f in SECTIONS.files()))
"""What ``results/report/`` can hold (at import time): ``summary.md`` and every section's
files. The overlay figures only if some image was shown; a skipped section's figures not (its
CSV tables are still written, header only); a section's files with
:attr:`~sibnet.report.section.Section.written_when` only under its params
(:data:`CONDITIONAL_FILES`)."""

CONDITIONAL_FILES = frozenset(
    f.name for section in SECTIONS.values() if section.written_when for f in section.files
)
"""The files of sections written only under some params (``report.pairs``, unlabeled images)."""


def report(
    params: Params,
    *,
    results: Path,
    models: Path,
    prepared: Path,
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
        prepared: the prepared dataset (its ``dataset.json``, read where the source yields
            unlabeled images: the *Training images* section).
        report: output folder ``results/report``.
        metrics: output ``results/metrics.json``.
        noise_plot, saliency_plot: output plot data (CSV) for ``dvc plots``.

    Returns:
        The contents of ``metrics``.

    Raises:
        ReportError: a run's output is missing, runs disagree on the test images or on
            whether saliency or segmentation was skipped, or a section is not registered or
            returns what it does not declare.
    """
    SECTIONS.check()
    context = ReportContext(params, results=results, models=models, prepared=prepared)
    outputs = {section.name: _build(section, context) for section in SECTIONS.values()}
    summary: dict[str, Any] = {
        "dataset": params.prepare.dataset,
        "reference": params.report.reference,
        "seeds": list(params.pipeline.seeds),
        "confidence": params.report.confidence,
        "not_run": {n: o.not_run for n, o in outputs.items() if o.not_run is not None},
    }
    for name, output in outputs.items():
        for key, entry in output.metrics.items():
            if key in summary:
                raise ReportError(
                    f"report section {name!r} returns the metrics.json entry {key!r}, which "
                    "the report or an earlier section has already"
                )
            summary[key] = entry
    plots = {"noise_plot": noise_plot, "saliency_plot": saliency_plot}
    plot_data: dict[Path, pd.DataFrame] = {}
    for name, output in outputs.items():
        for key, table in output.plot_data.items():
            if key not in plots:
                raise ReportError(
                    f"report section {name!r} returns plot data {key!r}; the report stage "
                    f"writes {sorted(plots)}"
                )
            if plots[key] in plot_data:
                raise ReportError(
                    f"report section {name!r} returns plot data {key!r}, which an earlier "
                    "section returns already"
                )
            plot_data[plots[key]] = table
    unsupplied = [key for key, path in plots.items() if path not in plot_data]
    if unsupplied:
        raise ReportError(
            f"no report section returns the plot data {unsupplied}, outputs of the report stage"
        )
    figures: dict[str, Figure] = {k: v for o in outputs.values() for k, v in o.figures.items()}
    with start_run(params, stage="report") as tracker, atomic_dir(report) as folder:
        tracker.log_params(
            {
                "report": params.report.model_dump(mode="json"),
                "pipeline": params.pipeline.model_dump(),
            }
        )
        for name, figure in figures.items():
            figure.draw(folder / name)
        for output in outputs.values():
            for name, table in output.tables.items():
                table.to_csv(folder / name, index=False, float_format="%.6f")
        markdown = summary_markdown(
            params,
            [o.markdown for o in outputs.values() if o.markdown is not None],
            {name: figure.caption for name, figure in figures.items()},
            context.inputs(),
        )
        (folder / SUMMARY_FILE.name).write_text(markdown, encoding="utf-8")
        for path in sorted(folder.iterdir()):
            tracker.log_artifact(path, artifact_path="report")
        tracker.log_metrics(summary)
    write_json(metrics, summary)
    for path, table in plot_data.items():
        with atomic_file(path) as tmp:
            table.to_csv(tmp, index=False, float_format="%.6f")
    log.info("report of %d runs → %s, %s", len(context.runs), report / "summary.md", metrics)
    return summary


def _build(section: Section, context: ReportContext) -> SectionOutput:
    """``section``'s output, checked against its declared files."""
    output = section.build(context)
    section.check_output(output)
    if output.not_run is not None:
        log.warning("%s was not run (%s): left out of the report", section.name, output.not_run)
    return output
