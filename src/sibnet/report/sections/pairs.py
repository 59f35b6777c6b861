"""Report section: paired comparisons of clean test macro AUC beyond the reference
(``report.pairs``), e.g. SIBnet+ against the semi-supervised reference in the unlabeled-images
study. Nothing is written when ``report.pairs`` is empty (the default)."""

from __future__ import annotations

import pandas as pd

from sibnet.report.common import ci, delta_cells, entry, value
from sibnet.report.context import ReportContext
from sibnet.report.section import ReportFile, Section, SectionOutput

__all__ = ["SECTION"]


def build(context: ReportContext) -> SectionOutput:
    """One row per ``[method, against]`` pair: ``method − against`` with its interval over
    seeds and test images; Holm over the pairs."""
    pairs = context.params.report.pairs
    if not pairs:
        return SectionOutput()
    from sibnet.metrics.comparison import add_verdicts, compare_aucs

    test = context.test_predictions()
    rows = []
    for method, against in pairs:
        table = compare_aucs(
            {method: test.probs[method], against: test.probs[against]},
            test.targets,
            reference=against,
            **context.boot,
        )
        own, other = table.iloc[0], table.iloc[1]
        rows.append({"against": against, **own.to_dict(), "against_mean": float(other["mean"])})
    table = pd.DataFrame(rows)
    table = add_verdicts(table, confidence=context.params.report.confidence, reference="")
    pct = f"{100 * context.params.report.confidence:g}%"
    lines = [
        "## Paired comparisons (clean test macro AUC)",
        "",
        f"The pairs of `report.pairs`; Holm's correction runs over these {len(table)} comparisons.",
        "",
        f"| method | against | macro AUC | {pct} CI | AUC of against | Δ | interval of Δ | "
        "p (Holm) | verdict |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for _, r in table.iterrows():
        lines.append(
            f"| {r['method']} | {r['against']} | {value(r['mean'])} | {ci(r)} | "
            f"{value(r['against_mean'])} | {delta_cells(r)} |"
        )
    return SectionOutput(
        markdown="\n".join(lines),
        tables={"pairs.csv": table},
        metrics={
            "pairs": [
                {"method": r["method"], "against": r["against"], **entry(r)}
                for _, r in table.iterrows()
            ]
        },
    )


SECTION = Section(
    name="pairs",
    subcategory="Classification",
    files=(
        ReportFile(
            "pairs.csv",
            "Paired comparisons of clean AUC (table)",
            """**Paired comparisons of clean test macro AUC** (``pairs.csv``), written when
``report.pairs`` lists some. One row per pair: ``method`` and ``against``, the method's
``mean`` macro AUC over seeds with its {confidence}% interval over test images, ``against_mean``
the other's, and ``delta`` = method − against with ``delta_ci_low``/``delta_ci_high`` its
interval over seeds *and* test images (as in ``clean_auc.csv``), ``image_delta_ci_low``/
``image_delta_ci_high`` over test images only; ``p_holm`` is Holm-adjusted over the pairs and
``verdict`` reads it. Each pair's image resamples are drawn for the two methods alone, so a
method's CI here may differ in the third decimal from ``clean_auc.csv``'s.""",
        ),
    ),
    build=build,
    metrics_caption="``pairs`` (one entry per pair of ``report.pairs``, when there are some)",
    written_when="report.pairs lists pairs",
)
