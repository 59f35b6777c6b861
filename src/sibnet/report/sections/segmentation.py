"""Report section: segmentation from the classifiers' encoders (Dice / HD95 per mode).

A dataset without organ masks (``segment.structures: []``) gives the reason instead
(``not_run``), a header-only table and no figure.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from sibnet.config import Params, segment_modes
from sibnet.report.common import ci, compare, delta_cells, entry, frames, value
from sibnet.report.context import ReportContext
from sibnet.report.section import Figure, ReportFile, Section, SectionOutput

__all__ = ["SECTION"]

HEADING = "## Segmentation from the classifiers' encoders"


def mode_reference(params: Params, methods: Sequence[str]) -> str:
    """The method a mode's rows are compared with: ``report.reference`` where it was trained in
    that mode, else ``segment.reference`` (the modes of ``segment.reference_modes`` are trained
    for that method alone)."""
    reference = params.report.reference
    if reference in methods or params.segment.reference is None:
        return reference
    return params.segment.reference


def segmentation_table(context: ReportContext, rows: pd.DataFrame) -> pd.DataFrame:
    """Dice and HD95 per method and mode, with verdicts on Dice (Holm over the table); each
    mode compared with :func:`mode_reference`."""
    from sibnet.metrics.comparison import COMPARISON_COLUMNS, add_verdicts

    table = frames(
        [
            compare(
                rows[rows["mode"] == mode],
                ("dice", "hd95"),
                keys=("id", "structure"),
                reference=mode_reference(
                    context.params, rows.loc[rows["mode"] == mode, "method"].unique()
                ),
                boot=context.boot,
                mode=mode,
            )
            for mode in rows["mode"].unique()
        ],
        [*COMPARISON_COLUMNS, "mode", "score"],
    )
    return add_verdicts(table, **context.verdicts, family=table["score"] == "dice")


def _markdown(params: Params, table: pd.DataFrame) -> str:
    settings = params.segment
    ref = params.report.reference
    extra = (
        f"{', '.join(settings.reference_modes) or 'nothing more'} also for `{settings.reference}`"
        if settings.reference
        else "nothing more"
    )
    references = {
        mode: mode_reference(params, block["method"].unique())
        for mode, block in table.groupby("mode", sort=False)
    }
    elsewhere = sorted(m for m, r in references.items() if r != ref)
    against = (
        f" Δ of {', '.join(elsewhere)} against `{settings.reference}`, the only method trained "
        "in it."
        if elsewhere
        else ""
    )
    pct = f"{100 * params.report.confidence:g}%"
    lines = [
        HEADING,
        "",
        f"A U-Net-style decoder trained on {', '.join(settings.structures)} "
        f"({settings.epochs} epochs, the first {settings.max_train_images or 'all'} annotated "
        "training images, Dice + BCE), under each method's encoder: *frozen* (trained encoder "
        "fixed — the paper's transfer recipe), *finetune* (trained encoder learns too), "
        "*scratch* (the same network from random initialisation); "
        f"{', '.join(settings.modes)} for every method, {extra}. "
        "Cells: mean [CI] over test images × structures, resampled by image (an image's "
        "structures together); HD95 in pixels, its Δ on the structures defined for both. "
        f"Verdicts on Δ Dice, Holm-corrected over the table's rows.{against}",
        "",
        f"| method | mode | seeds | Dice | {pct} CI | HD95 (px) | {pct} CI | Δ Dice vs {ref} | "
        "interval of Δ | p (Holm) | verdict |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for (method, mode), block in table.groupby(["method", "mode"], sort=False):
        block = block.set_index("score")
        d, h = block.loc["dice"], block.loc["hd95"]
        delta = "reference | | |" if method == references[mode] else delta_cells(d)
        lines.append(
            f"| {method} | {mode} | {int(d['n_seeds'])} | {value(d['mean'])} | {ci(d)} | "
            f"{value(h['mean'])} | {ci(h)} | {delta} |"
        )
    return "\n".join(lines)


def _figure(context: ReportContext) -> dict[str, Figure]:
    """The overlay: every method in the first mode, the segmentation reference
    (``segment.reference``) in its other modes (none when no image was shown)."""
    params = context.params
    reference = params.segment.reference
    modes = segment_modes(params, reference) if reference else list(params.segment.modes)
    examples = context.examples(
        "segment", "segmentation examples", lambda arrays: [str(i) for i in arrays["id"]]
    )
    first = next(iter(examples.values()))
    ids = [str(i) for i in first["id"]]
    if not ids:
        return {}
    predictions: dict[str, np.ndarray] = {
        f"{method} · {modes[0]}": arrays[f"pred_{modes[0]}"] for method, arrays in examples.items()
    }
    for mode in modes[1:]:  # only the reference has more than one mode
        predictions[f"{reference} · {mode}"] = examples[reference][f"pred_{mode}"]
    title = (
        f"{params.prepare.dataset}: segmentation ({', '.join(first['structures'])}), "
        f"seed {context.seeds[0]}"
    )

    def draw(path: Path) -> None:
        from sibnet.plots.report import plot_segmentation_overlay

        plot_segmentation_overlay(first["image"], first["truth"], predictions, ids, path, title)

    caption = (
        f"Segmentation of the same {len(ids)} test images: every method's "
        f"{modes[0]} encoder, and the reference method's other modes; ground truth solid, "
        "prediction dashed."
    )
    return {"segmentation_overlay.png": Figure(caption, draw)}


def build(context: ReportContext) -> SectionOutput:
    """The segmentation table and overlay, from the segment stage's per-structure rows."""
    parts = {
        (m, s): pd.read_parquet(context.path("segment", "segmentation", m, s))
        for m, s in context.runs
    }
    skipped = context.not_run("segment", parts)
    table = segmentation_table(context, pd.concat(parts.values(), ignore_index=True))
    tables = {"segmentation.csv": table}
    if skipped is not None:
        markdown = f"{HEADING}\n\nSegmentation was not run: {skipped}."
        return SectionOutput(markdown=markdown, tables=tables, not_run=skipped)
    metrics = {
        "segmentation": {
            method: {
                mode: {row["score"]: entry(row) for _, row in rows.iterrows()}
                for mode, rows in block.groupby("mode", sort=False)
            }
            for method, block in table.groupby("method", sort=False)
        }
    }
    return SectionOutput(
        markdown=_markdown(context.params, table),
        tables=tables,
        figures=_figure(context),
        metrics=metrics,
    )


SECTION = Section(
    name="segmentation",
    subcategory="Segmentation transfer",
    files=(
        ReportFile(
            "segmentation.csv",
            "Segmentation from the encoders (table)",
            """**Segmentation from the classifiers' encoders** (``segmentation.csv``).
A decoder trained on the organ masks under each method's trained encoder: ``frozen`` (encoder
fixed, the transfer recipe), ``finetune`` (encoder trained too) and ``scratch`` (random
initialisation, a baseline). One row per method, ``mode`` and ``score`` (``dice``; ``hd95`` in
pixels): ``mean`` over test images and structures with its {confidence}% bootstrap interval
(resampling images, an image's structures together), and ``delta``, the difference from
``{reference}`` in the same mode, with verdicts on Dice. The table has its header only when
segmentation was not run on this dataset.""",
        ),
        ReportFile(
            "segmentation_overlay.png",
            "Segmentation overlays (figure)",
            """**Segmentation overlays** (``segmentation_overlay.png``).
The same test images (first seed), one row per model: every method's first mode, and the
segmentation reference method (``segment.reference``) in its other modes. Ground-truth
outlines are solid (lime), predicted outlines dashed (magenta), for every structure.""",
        ),
    ),
    build=build,
    metrics_caption="``segmentation`` per mode and score",
)
