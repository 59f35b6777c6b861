"""Report section: the clean test macro AUC of every method, compared with the reference."""

from __future__ import annotations

from sibnet.report.common import ci, delta_cells, entry, value
from sibnet.report.context import ReportContext
from sibnet.report.section import ReportFile, Section, SectionOutput

__all__ = ["SECTION"]


def build(context: ReportContext) -> SectionOutput:
    """The clean AUC table, from the evaluate stage's predictions."""
    from sibnet.metrics.comparison import add_verdicts, compare_aucs

    test = context.test_predictions()
    table = add_verdicts(
        compare_aucs(test.probs, test.targets, reference=context.reference, **context.boot),
        **context.verdicts,
    )
    ref = context.reference
    pct = f"{100 * context.params.report.confidence:g}%"
    lines = [
        "## Clean test macro AUC",
        "",
        f"| method | seeds | macro AUC | {pct} CI | SD | Δ vs {ref} | interval of Δ | "
        "p (Holm) | verdict |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for _, r in table.iterrows():
        delta = "reference | | |" if r["method"] == ref else delta_cells(r)
        lines.append(
            f"| {r['method']} | {r['n_seeds']} | {value(r['mean'])} | {ci(r)} | "
            f"{value(r['sd'])} | {delta} |"
        )
    return SectionOutput(
        markdown="\n".join(lines),
        tables={"clean_auc.csv": table},
        metrics={"clean_auc": {row["method"]: entry(row) for _, row in table.iterrows()}},
    )


SECTION = Section(
    name="clean_auc",
    subcategory="Classification",
    files=(
        ReportFile(
            "clean_auc.csv",
            "Clean test macro AUC (table)",
            """**Clean test macro AUC per method** (``clean_auc.csv``).
One row per method: ``mean`` is the macro AUC (mean over the classes of the one-vs-rest AUC)
averaged over seeds, ``median`` the median over seeds, ``ci_low``/``ci_high`` its
{confidence}% percentile-bootstrap interval over test images (every seed scored on the same
resampled images), ``sd`` the standard deviation over seeds (training randomness).
``delta`` is the difference from the reference method ``{reference}``, with
``delta_ci_low``/``delta_ci_high`` its interval over seeds *and* test images (a seed-level Welch
t-interval with the paired image variance added; ``delta_se``, ``delta_df``, ``p_value``), empty
with fewer than two seeds; ``image_delta_ci_low``/``image_delta_ci_high`` is the interval over
test images only, conditional on these networks. ``p_holm`` is the p-value Holm-adjusted over
the table's comparisons and ``verdict`` reads it: *higher*, *lower*, *no clear difference*, or
*no verdict (one seed)*. ``n_seeds`` and ``n`` count the seeds and the test images.""",
        ),
    ),
    build=build,
    metrics_caption="``clean_auc`` per method",
)
