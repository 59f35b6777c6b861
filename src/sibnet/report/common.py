"""Helpers the report sections share: comparison tables, Markdown cells, JSON entries.

:mod:`sibnet.metrics.comparison` (SciPy) is imported where it is used, as in the sections.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import pandas as pd

__all__ = ["ci", "compare", "delta_cells", "delta_interval", "entry", "frames", "number", "value"]


def frames(parts: list[pd.DataFrame], columns: Sequence[str]) -> pd.DataFrame:
    """``parts`` concatenated; an empty table with ``columns`` when there are none."""
    if not parts:
        return pd.DataFrame(columns=list(columns))
    return pd.concat(parts, ignore_index=True)


def compare(
    rows: pd.DataFrame,
    scores: Sequence[str],
    *,
    keys: tuple[str, ...],
    reference: str,
    boot: dict[str, Any],
    **labels: str,
) -> pd.DataFrame:
    """:func:`~sibnet.metrics.comparison.compare_scores` of each of ``scores`` (with a
    ``score`` column, after ``labels``); no rows for no input rows."""
    from sibnet.metrics.comparison import COMPARISON_COLUMNS, compare_scores

    columns = [*COMPARISON_COLUMNS, *labels, "score"]
    if rows.empty:
        return pd.DataFrame(columns=columns)
    return frames(
        [
            compare_scores(rows, score, keys=keys, reference=reference, **boot).assign(
                **labels, score=score
            )
            for score in scores
        ],
        columns,
    )


def value(x: float, digits: int = 3, sign: bool = False) -> str:
    """``x`` with ``digits`` decimals (a sign with ``sign``); ``–`` when not finite."""
    if not math.isfinite(x):
        return "–"
    return f"{x:+.{digits}f}" if sign else f"{x:.{digits}f}"


def ci(row: Any, low: str = "ci_low", high: str = "ci_high", digits: int = 3) -> str:
    """``[low, high]`` of a row's interval; ``–`` when an end is not finite."""
    a, b = row[low], row[high]
    if not (math.isfinite(a) and math.isfinite(b)):
        return "–"
    return f"[{a:.{digits}f}, {b:.{digits}f}]"


def delta_interval(row: Any, digits: int = 3) -> str:
    """Δ's interval over seeds and images, or its image-only interval marked so (one seed)."""
    if math.isfinite(row["delta_ci_low"]):
        return ci(row, "delta_ci_low", "delta_ci_high", digits)
    return ci(row, "image_delta_ci_low", "image_delta_ci_high", digits) + " (images only)"


def delta_cells(row: Any, digits: int = 3) -> str:
    """``Δ | interval | p | verdict`` cells of a comparison row (the image-only interval, marked
    so, when there is no seed-level one)."""
    delta = value(row["delta"], digits, sign=True)
    interval = delta_interval(row, digits)
    p = row["p_holm"] if "p_holm" in row.index else float("nan")
    p_text = f"{p:.3g}" if math.isfinite(p) else "–"
    return f"{delta} | {interval} | {p_text} | {row['verdict'] or ''}"


def number(x: float | None) -> float | None:
    """``x`` for JSON: rounded to 6 decimals, ``None`` when undefined."""
    return None if x is None or not math.isfinite(x) else round(float(x), 6)


def entry(row: pd.Series) -> dict[str, float | str | None]:
    """A comparison row's numbers (JSON-ready: ``None`` where undefined) and its verdict."""
    from sibnet.metrics.comparison import COMPARISON_COLUMNS

    result: dict[str, float | str | None] = {
        k: number(row[k]) for k in COMPARISON_COLUMNS if k not in ("method", "n_seeds", "n")
    }
    if "verdict" in row.index:
        result["p_holm"] = number(row["p_holm"])
        result["verdict"] = row["verdict"] or None
    return result
