"""``summary.md`` around the sections' blocks, and what ``snakemake --report`` shows per file.

``summary.md`` is the dataset heading and :func:`intervals_text`, every section's Markdown
block in section order, the *Figures* (every section's, in section order, each with its
caption) and the *Inputs* (every file read, with its SHA-256), blank-line separated.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from sibnet.config import Params
from sibnet.files import sha256_file
from sibnet.report.section import ReportFile, Section, SectionRegistry

__all__ = [
    "METRICS_FILE",
    "SUMMARY_FILE",
    "SUMMARY_SUBCATEGORY",
    "intervals_text",
    "metrics_caption",
    "snakemake_results",
    "summary_markdown",
]

SUMMARY_SUBCATEGORY = "Summary"
"""The group of ``summary.md`` and ``metrics.json`` in ``snakemake --report``."""

SUMMARY_FILE = ReportFile(
    "summary.md",
    "All tables and figures (Markdown)",
    """**The whole report in Markdown** (``summary.md``): every table of this report, formatted,
with the figures' captions, and the SHA-256 of every file the report was computed from.
Scores are means over seeds; their intervals are {confidence}% percentile-bootstrap
intervals over test images (for these trained networks); SD is the standard deviation over
seeds; Δ is each method's difference from the reference method ``{reference}`` with an
interval over seeds and test images, and a verdict *higher*/*lower* when its Holm-adjusted
p-value (within its table) is below the family-wise level; no verdict with one seed.""",
)

METRICS_FILE = "metrics.json"
METRICS_TITLE = "Headline numbers (JSON)"


def metrics_caption(sections: Iterable[Section]) -> str:
    """The caption of ``results/metrics.json``, naming every section's entries (a
    :class:`ReportFile` caption: ``{reference}`` filled in later)."""
    entries = "; ".join(s.metrics_caption for s in sections if s.metrics_caption)
    return f"""**Headline numbers** (``results/metrics.json``), the file ``dvc metrics show`` reads.
Entries: {entries}. Each comparison entry gives the mean over seeds, its median, its
bootstrap interval over test images (``ci_low``/``ci_high``), the standard deviation over seeds
(``sd``), the difference from the reference method ``{{reference}}`` (``delta``) with its
interval over seeds and images (``delta_ci_low``, ``delta_ci_high``, ``p_value``) and over
images only (``image_delta_ci_low``, ``image_delta_ci_high``), and the Holm-adjusted ``p_holm``
and ``verdict`` (none with one seed). ``not_run`` maps a section left out of the report
(saliency or segmentation on a dataset without the masks it needs) to the reason."""


def snakemake_results(params: Params, sections: SectionRegistry) -> dict[str, dict[str, str]]:
    """What ``snakemake --report`` shows for each result: ``results/report/``'s files by stem,
    and ``metrics.json``, each with its ``subcategory``, ``title`` and rendered ``caption``."""
    settings = params.report
    results = {
        SUMMARY_FILE.stem: {
            "subcategory": SUMMARY_SUBCATEGORY,
            "title": SUMMARY_FILE.title,
            "caption": SUMMARY_FILE.caption_for(settings.reference, settings.confidence),
        }
    }
    for section in sections.values():
        for file in section.files:
            results[file.stem] = {
                "subcategory": section.subcategory,
                "title": file.title,
                "caption": file.caption_for(settings.reference, settings.confidence),
            }
    metrics = ReportFile(METRICS_FILE, METRICS_TITLE, metrics_caption(sections.values()))
    results[METRICS_FILE] = {
        "subcategory": SUMMARY_SUBCATEGORY,
        "title": METRICS_TITLE,
        "caption": metrics.caption_for(settings.reference, settings.confidence),
    }
    return results


def intervals_text(params: Params) -> str:
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


def summary_markdown(
    params: Params, blocks: list[str], figures: dict[str, str], inputs: list[Path]
) -> str:
    """The text of ``summary.md``.

    Args:
        blocks: the sections' Markdown blocks, in section order.
        figures: file name → caption, in section order.
        inputs: every file read (listed with its SHA-256).
    """
    heading = f"# sibnet report: dataset `{params.prepare.dataset}`\n\n{intervals_text(params)}"
    listed = ["## Figures", *(f"![{c}]({name})\n\n*{c}*" for name, c in figures.items())]
    files = "\n".join(
        [
            "## Inputs",
            "",
            "Every file this report was computed from, with its SHA-256:",
            "",
            "| file | sha256 |",
            "|---|---|",
            *(f"| `{path}` | `{sha256_file(path)}` |" for path in inputs),
        ]
    )
    return "\n\n".join([heading, *blocks, "\n\n".join(listed), files]) + "\n"
