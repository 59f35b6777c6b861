"""Report section: the test macro AUC under Gaussian noise, per σ, with the noise really added."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from sibnet.config import Params
from sibnet.report.common import ci, delta_interval, entry, value
from sibnet.report.context import ReportContext
from sibnet.report.section import Figure, ReportError, ReportFile, Section, SectionOutput

__all__ = ["NOISE_LEVELS", "SECTION"]

NOISE_LEVELS = ("sigma", "noise_mean_measured", "noise_std_measured", "total_noise_std")
"""Columns of the robustness table the noise table carries per σ (what was really added)."""


def noise_table(context: ReportContext) -> pd.DataFrame:
    """AUC of every method per σ with verdicts (Holm over the whole table) and
    :data:`NOISE_LEVELS`, from the robustness stage's predictions.

    Raises:
        ReportError: a run scored other test images than evaluate, or lacks a σ.
    """
    from sibnet.metrics.comparison import add_verdicts, compare_aucs

    test = context.test_predictions()
    noisy: dict[float, dict[str, list[np.ndarray]]] = {}
    for m, s in context.runs:
        path = context.path("robustness", "predictions", m, s)
        frame = pd.read_parquet(path)
        for sigma, block in frame.groupby("sigma", sort=True):
            if not np.array_equal(block["id"].to_numpy(), test.ids):
                raise ReportError(f"{path}: σ={sigma:g} scored other test images than evaluate")
            probs = block[[f"prob_{c}" for c in test.classes]].to_numpy(np.float64)
            noisy.setdefault(float(sigma), {k: [] for k in context.methods})[m].append(probs)
    sigmas = sorted(noisy)
    for sigma in sigmas:
        short = [m for m in context.methods if len(noisy[sigma][m]) != len(context.seeds)]
        if short:
            raise ReportError(f"σ={sigma:g} is missing from the robustness results of {short}")
    table = pd.concat(
        [
            compare_aucs(
                noisy[sigma], test.targets, reference=context.reference, **context.boot
            ).assign(sigma=sigma)
            for sigma in sigmas
        ],
        ignore_index=True,
    )
    levels = pd.read_parquet(context.path("robustness", "robustness", *context.runs[0]))
    return add_verdicts(table, **context.verdicts).merge(
        levels[list(NOISE_LEVELS)], on="sigma", how="left"
    )


def _markdown(params: Params, noise: pd.DataFrame) -> str:
    """AUC per σ, the noise really added, and Δ with verdicts."""
    from sibnet.metrics.comparison import NO_SEED_VERDICT

    ref = params.report.reference
    pct = f"{100 * params.report.confidence:g}%"
    levels = noise.drop_duplicates("sigma").sort_values("sigma")
    sigmas = levels["sigma"].tolist()
    header = " | ".join(f"σ = {s:g}" for s in sigmas)

    def row_of(name: str, column: str, digits: int = 4) -> str:
        return f"| {name} | " + " | ".join(value(v, digits) for v in levels[column]) + " |"

    lines = [
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
        cells = [f"{value(r['mean'])} {ci(r)}" for _, r in block.sort_values("sigma").iterrows()]
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
            cells.append(f"{value(r['delta'], sign=True)} {delta_interval(r)}{verdict}")
        lines.append(f"| {method} | {' | '.join(cells)} |")
    return "\n".join(lines)


def build(context: ReportContext) -> SectionOutput:
    """The noise table, its figure and the AUC-against-σ plot data (one column per method)."""
    table = noise_table(context)
    params = context.params
    title = (
        f"{params.prepare.dataset}: test macro AUC under Gaussian noise "
        f"(mean over {len(context.seeds)} seed(s))"
    )

    def draw(path: Path) -> None:
        from sibnet.plots.report import plot_auc_vs_noise

        plot_auc_vs_noise(table.rename(columns={"mean": "macro_auc"}), path, title)

    pct = f"{100 * params.report.confidence:g}%"
    wide = table.pivot(index="sigma", columns="method", values="mean")[context.methods]
    return SectionOutput(
        markdown=_markdown(params, table),
        tables={"auc_under_noise.csv": table},
        figures={
            "auc_vs_noise.png": Figure(
                f"Test macro AUC against the noise σ, with {pct} bootstrap CIs.", draw
            )
        },
        metrics={
            "noise_auc": {
                method: {f"sigma_{row['sigma']:g}": entry(row) for _, row in block.iterrows()}
                for method, block in table.groupby("method", sort=False)
            }
        },
        plot_data={"noise_plot": wide.reset_index()},
    )


SECTION = Section(
    name="noise",
    subcategory="Classification",
    files=(
        ReportFile(
            "auc_under_noise.csv",
            "Macro AUC under Gaussian noise (table)",
            """**Test macro AUC under Gaussian noise** (``auc_under_noise.csv``).
The columns of the clean AUC table, once per noise level ``sigma``: Gaussian noise N(0, σ²) added
to the test images (intensities in [0, 1]) before scoring; σ = 0 is the clean test set.
Intervals are {confidence}% bootstrap intervals over test images; ``delta`` and its intervals
compare each method with the reference method ``{reference}`` at the same σ, on the same
noisy images, with verdicts Holm-corrected over every method and σ. ``noise_mean_measured``,
``noise_std_measured`` say what was really added after clipping (one-sided at the dark
background) and ``total_noise_std`` the total with the dataset's own noise where it is known. A
robust method keeps its AUC as σ grows.""",
        ),
        ReportFile(
            "auc_vs_noise.png",
            "Macro AUC against noise σ (figure)",
            """**Macro AUC against the noise level** (``auc_vs_noise.png``).
One line per method: the test macro AUC (mean over seeds) at each Gaussian noise σ, with its
{confidence}% bootstrap interval as a capped vertical bar. The σ values are unevenly
spaced, so they sit at evenly spaced positions labelled with their values; the methods are
shifted slightly sideways so that their bars do not overlap. Overlapping bars do not prove the
methods equal: the paired differences from ``{reference}`` are in ``auc_under_noise.csv``.""",
        ),
    ),
    build=build,
    metrics_caption="``noise_auc`` per method and noise σ (``sigma_<σ>``)",
)
