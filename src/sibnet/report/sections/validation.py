"""Report section: the validation macro AUC of the epoch each run kept (model selection)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from sibnet.report.common import number, value
from sibnet.report.context import ReportContext
from sibnet.report.section import ReportFile, Section, SectionOutput

__all__ = ["SECTION", "VALIDATION_COLUMNS", "validation_auc_table"]

VALIDATION_COLUMNS = ("method", "n_seeds", "mean", "sd", "min", "max", "best_epochs")


def validation_auc_table(histories: dict[str, list[pd.DataFrame]]) -> pd.DataFrame:
    """The validation macro AUC of the epoch each run kept (its best), per method over seeds.

    Training keeps the epoch with the highest validation macro AUC (:mod:`sibnet.stages.train`),
    so this is each run's selection score; configurations are chosen by it, never by the test
    tables. Columns :data:`VALIDATION_COLUMNS`: the mean, SD (over seeds; NaN with one), lowest
    and highest of the kept epochs' AUCs, and the kept epochs (space-separated, in seed order).

    Args:
        histories: method → each seed's history (columns ``epoch``, ``val_auc``).
    """
    rows = []
    for method, histories_of in histories.items():
        best = [frame.loc[frame["val_auc"].fillna(-np.inf).idxmax()] for frame in histories_of]
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


def build(context: ReportContext) -> SectionOutput:
    """The validation table, from every run's training history."""
    table = validation_auc_table(context.histories())
    lines = [
        "## Validation macro AUC (model selection)",
        "",
        "The validation macro AUC of the epoch each run kept. Choose between configurations by "
        "this table; the test tables below are for reporting only.",
        "",
        "| method | seeds | mean | SD | lowest | highest | kept epochs |",
        "|---|---|---|---|---|---|---|",
    ]
    for _, r in table.iterrows():
        lines.append(
            f"| {r['method']} | {r['n_seeds']} | {value(r['mean'])} | {value(r['sd'])} | "
            f"{value(r['min'])} | {value(r['max'])} | {r['best_epochs']} |"
        )
    metrics = {
        "validation_auc": {
            row["method"]: {k: number(row[k]) for k in ("mean", "sd", "min", "max")}
            for _, row in table.iterrows()
        }
    }
    return SectionOutput(
        markdown="\n".join(lines), tables={"validation_auc.csv": table}, metrics=metrics
    )


SECTION = Section(
    name="validation",
    subcategory="Training",
    files=(
        ReportFile(
            "validation_auc.csv",
            "Validation macro AUC of the kept epochs (table)",
            "**Validation macro AUC of the epoch each run kept** (``validation_auc.csv``), the "
            "model-selection score: choose between configurations by it, never by the test "
            "tables. One row per method: ``mean``, ``sd`` (over seeds; empty with one), ``min`` "
            "and ``max`` of the kept epochs' validation macro AUCs, and ``best_epochs``, the "
            "kept epoch of each seed in seed order.",
        ),
    ),
    build=build,
    metrics_caption="``validation_auc`` (the kept epochs' validation macro AUC: ``mean``, "
    "``sd``, ``min``, ``max``)",
)
