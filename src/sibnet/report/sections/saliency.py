"""Report section: agreement of the Grad-CAM maps with the lesion masks, per class and pooled.

Dice, HD95, SSIM (convex hull; the paper's protocol, never a verdict), Dice without the hull,
the pointing game and the energy-based pointing games, with the label-only prior-map and
uniform-map rows, and a split by correctly and wrongly classified images. A dataset without
lesion masks to score gives the reason instead (``not_run``), a header-only table and no
figures.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from sibnet.config import Params
from sibnet.report.common import ci, compare, delta_interval, entry, value
from sibnet.report.context import ReportContext
from sibnet.report.section import Figure, ReportError, ReportFile, Section, SectionOutput

__all__ = ["POOLED", "REFERENCE_ROWS", "SALIENCY_SCORES", "SALIENCY_VERDICTS", "SECTION"]

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


def saliency_table(
    rows: pd.DataFrame, reference: str, boot: dict[str, Any], methods: Sequence[str]
) -> pd.DataFrame:
    """Every saliency score per class (and pooled: ``class`` :data:`POOLED`), for every method
    and the reference maps (:data:`REFERENCE_ROWS`, taken from the first run: they are the same
    for all), with Holm verdicts on :data:`SALIENCY_VERDICTS` per class."""
    from sibnet.metrics.comparison import COMPARISON_COLUMNS, VERDICT_COLUMNS, add_verdicts

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
        compare(
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


def _markdown(params: Params, saliency: pd.DataFrame, rows: pd.DataFrame) -> list[str]:
    """The lines after the heading: a table per class, pooled last, and the split by correctly
    and wrongly classified images."""
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
                f"{value(rows_of.loc[s, 'mean'])} {ci(rows_of.loc[s])}" for s in SALIENCY_SCORES
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
                    else f"{value(rows_of.loc[s, 'delta'], sign=True)} "
                    f"{delta_interval(rows_of.loc[s])} {rows_of.loc[s, 'verdict']}".rstrip()
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
    return lines + _correct_split_markdown(gradcam, methods)


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
            f"| {method} | {len(right)} | {value(right['dice'].mean())} | "
            f"{value(right['energy_lesion'].mean())} | {len(wrong)} | "
            f"{value(wrong['dice'].mean())} | {value(wrong['energy_lesion'].mean())} | "
            f"{int(own['negligible'].sum())} |"
        )
    return lines


def _metrics(table: pd.DataFrame, methods: Sequence[str]) -> dict[str, Any]:
    """``saliency``: each method's scores pooled over classes; ``saliency_per_class``: the same
    per class, with the reference maps (``prior map``, ``uniform map``) beside the methods."""
    pooled = table[(table["class"] == POOLED) & table["method"].isin(methods)]
    return {
        "saliency": {
            method: {row["score"]: entry(row) for _, row in block.iterrows()}
            for method, block in pooled.groupby("method", sort=False)
        },
        "saliency_per_class": {
            name: {
                method: {row["score"]: entry(row) for _, row in rows.iterrows()}
                for method, rows in block.groupby("method", sort=False)
            }
            for name, block in table[table["class"] != POOLED].groupby("class", sort=False)
        },
    }


def _bars(table: pd.DataFrame, methods: Sequence[str]) -> pd.DataFrame:
    """The pooled mean of every score per method (``dvc plots`` data); the header only when
    saliency was not scored."""
    pooled = table[table["class"] == POOLED]
    if pooled.empty:
        return pd.DataFrame(columns=["method", *SALIENCY_SCORES])
    bars = pooled.pivot(index="method", columns="score", values="mean")
    return bars.loc[list(methods), list(SALIENCY_SCORES)].reset_index()


def _figures(context: ReportContext, rows: pd.DataFrame) -> dict[str, Figure]:
    """The score distributions, and the overlays when some image was shown."""
    dataset = context.params.prepare.dataset
    first_seed = context.seeds[0]
    gradcam = rows[rows["map"] == "gradcam"]

    def distributions(path: Path) -> None:
        from sibnet.plots.report import plot_saliency_distributions

        plot_saliency_distributions(gradcam, path, f"{dataset}: saliency agreement per map")

    figures = {
        "saliency_distributions.png": Figure(
            "Distribution over scored maps (all seeds) of Dice, HD95 and SSIM of the convex hull.",
            distributions,
        )
    }
    examples = context.examples(
        "saliency", "overlay examples", lambda arrays: [str(i) for i in arrays["id"]]
    )
    first = next(iter(examples.values()))
    ids = [str(i) for i in first["id"]]
    if not ids:
        return figures

    def overlay(path: Path) -> None:
        from sibnet.plots.report import plot_saliency_overlay

        plot_saliency_overlay(
            first["image"],
            first["mask"],
            {m: a["saliency"] for m, a in examples.items()},
            {m: a["hull"] for m, a in examples.items()},
            [f"{i} · {c}" for i, c in zip(ids, first["class"], strict=True)],
            path,
            f"{dataset}: Grad-CAM (seed {first_seed}), ground truth and convex hull",
        )

    figures["saliency_overlay.png"] = Figure(
        f"The same {len(ids)} test images for every method (seed {first_seed}): Grad-CAM map "
        "of the finding's class, ground-truth contour, hull of the binarised map.",
        overlay,
    )
    return figures


def build(context: ReportContext) -> SectionOutput:
    """The saliency tables, figures and plot data, from the saliency stage's per-map rows."""
    parts = {
        (m, s): pd.read_parquet(context.path("saliency", "saliency", m, s)) for m, s in context.runs
    }
    skipped = context.not_run("saliency", parts)
    methods = context.methods
    heading = ["## Saliency agreement with the lesion masks", ""]
    if skipped is not None:
        table = saliency_table(next(iter(parts.values())), context.reference, context.boot, methods)
        return SectionOutput(
            markdown="\n".join([*heading, f"Saliency agreement was not scored: {skipped}."]),
            tables={"saliency.csv": table},
            plot_data={"saliency_plot": _bars(table, methods)},
            not_run=skipped,
        )
    rows = pd.concat(parts.values(), ignore_index=True)
    table = saliency_table(rows, context.reference, context.boot, methods)
    return SectionOutput(
        markdown="\n".join([*heading, *_markdown(context.params, table, rows)]),
        tables={"saliency.csv": table},
        figures=_figures(context, rows),
        metrics=_metrics(table, methods),
        plot_data={"saliency_plot": _bars(table, methods)},
    )


SECTION = Section(
    name="saliency",
    subcategory="Saliency",
    files=(
        ReportFile(
            "saliency.csv",
            "Saliency agreement with the lesion masks (table)",
            """**Saliency agreement with the lesion masks** (``saliency.csv``).
For every positive finding with a lesion mask, the Grad-CAM map of that class is binarised and
its convex hull compared with the mask. One row per ``class`` (``all``: pooled), method and
``score``: ``dice``, ``hd95`` (95th-percentile Hausdorff distance in pixels, lower is better),
``ssim`` (the paper's protocol; it rewards empty maps, so no verdict uses it), ``dice_raw``
(Dice of the binarised map without the hull), ``pointing_hit`` (share of maps whose maximum
lies in the mask), ``energy_lesion`` / ``energy_body`` (share of the map's mass in the lesion /
the body). The rows ``prior map`` (the class's mean training mask) and ``uniform map`` (a
constant map) are label-only references. ``mean`` is the mean over seeds of each run's mean
over its maps, with its {confidence}% bootstrap interval resampling images; ``delta`` is
the difference from ``{reference}`` (HD95 on the maps defined for both, ``n_paired``), with
verdicts on Dice and energy in lesion per class. The table has its header only when saliency
was not scored on this dataset.""",
        ),
        ReportFile(
            "saliency_distributions.png",
            "Saliency score distributions (figure)",
            """**Distribution of the saliency scores** (``saliency_distributions.png``).
One panel per score (Dice, HD95 in pixels, SSIM of the convex hull), one box per method over
every scored map of every seed; the points are the individual maps (jittered sideways). The box
spans the quartiles, the orange line is the median; ``n/a: k`` under a box counts the maps where
the score is undefined (e.g. HD95 of an empty binarisation).""",
        ),
        ReportFile(
            "saliency_overlay.png",
            "Grad-CAM overlays (figure)",
            """**Grad-CAM overlays** (``saliency_overlay.png``).
The same test images for every method (first seed), one row per method: the image in grey, the
Grad-CAM map of the finding's class over it (jet colours, blue 0 to red 1), the ground-truth
lesion outline (lime, solid) and the outline of the convex hull of the binarised map (magenta,
dashed). A map that agrees with the lesion puts its hull on the lime outline.""",
        ),
    ),
    build=build,
    metrics_caption="``saliency`` per score (pooled over classes) and ``saliency_per_class`` "
    "(with the prior and uniform reference maps)",
)
