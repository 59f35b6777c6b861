"""A study's report in one table: selection by validation AUC, then the test-side evidence.

Reads a finished run's ``results/metrics.json`` and ``results/report/saliency.csv`` (any params
file run by the DAG, e.g. ``studies/fidelity.yaml``) and writes a Markdown table, one row per
method: the validation macro AUC of the kept epochs (mean ± SD over seeds; the selection score),
the clean test macro AUC with its CI and Δ from ``report.reference`` with its interval over
seeds and test images and Holm verdict, the same for AUC at one noise σ, the energy-based
pointing game (energy in lesion, pooled over classes) and the pointing game with the uniform
map's values as chance level, and frozen-encoder segmentation Dice. The configuration selected
is the one with the highest mean validation AUC among ``--candidates`` (default: every method
but the reference). Run from the repository root:

    python -m benchmarks.study_summary RUN_FOLDER [--sigma 0.05] [--candidates a b ...] \
        [--out benchmarks/results/fidelity_table.md]

``RUN_FOLDER`` holds ``results/`` (for a benchmark run with ``--keep DIR``: ``DIR/repo``).
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

import pandas as pd

from sibnet.files import atomic_file


def _number(value: Any, digits: int = 3, sign: bool = False) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    return f"{value:+.{digits}f}" if sign else f"{value:.{digits}f}"


def _delta(entry: dict[str, Any]) -> str:
    if entry.get("verdict") == "reference":
        return "reference"
    low, high = entry.get("delta_ci_low"), entry.get("delta_ci_high")
    interval = (
        f" [{_number(low, sign=True)}, {_number(high, sign=True)}]" if low is not None else ""
    )
    verdict = entry.get("verdict") or "(pooled: no verdict)"
    return f"{_number(entry.get('delta'), sign=True)}{interval} {verdict}"


def _score(entry: dict[str, Any] | None) -> str:
    if not entry:
        return "–"
    return f"{_number(entry['mean'])} [{_number(entry['ci_low'])}, {_number(entry['ci_high'])}]"


def summarise(run: Path, sigma: float, candidates: list[str] | None) -> tuple[str, str]:
    """``(markdown table, selected method)`` of the run in folder ``run``."""
    metrics = json.loads((run / "results/metrics.json").read_text())
    saliency = pd.read_csv(run / "results/report/saliency.csv")
    pooled = saliency[saliency["class"] == "all"].set_index(["method", "score"])
    validation = metrics["validation_auc"]
    reference = metrics["reference"]
    pool = candidates or [m for m in validation if m != reference]
    selected = max(pool, key=lambda m: validation[m]["mean"])
    noise = f"sigma_{sigma:g}"
    lines = [
        f"Validation AUC: the kept epochs' validation macro AUC, mean ± SD over seeds "
        f"{metrics['seeds']} (the selection score; **selected: `{selected}`** among "
        f"{len(pool)} candidates). Test columns: mean over seeds [95% CI over test images]; Δ from "
        f"`{reference}` [interval over seeds and test images] and the Holm verdict of its table. "
        "Energy in lesion: the share of a map's positive mass inside the lesion, pooled over "
        "classes; pointing: the share of maps whose maximum lies in the lesion.",
        "",
        f"| method | validation AUC | test AUC | Δ test AUC | AUC at σ = {sigma:g} | "
        f"Δ at σ = {sigma:g} | energy in lesion | Δ energy | pointing | "
        "segmentation Dice (frozen) | Δ Dice |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for method, val in validation.items():
        clean = metrics["clean_auc"][method]
        noisy = metrics["noise_auc"][method][noise]
        sal = metrics.get("saliency", {}).get(method, {})
        seg = metrics.get("segmentation", {}).get(method, {}).get("frozen", {}).get("dice")
        energy = sal.get("energy_lesion")
        pointing = sal.get("pointing_hit")
        name = f"**{method}**" if method == selected else method
        lines.append(
            f"| {name} | {_number(val['mean'])} ± {_number(val['sd'])} | {_score(clean)} | "
            f"{_delta(clean)} | {_score(noisy)} | {_delta(noisy)} | {_score(energy)} | "
            f"{_delta(energy) if energy else '–'} | "
            f"{_number(pointing['mean']) if pointing else '–'} | {_score(seg)} | "
            f"{_delta(seg) if seg else '–'} |"
        )
    for chance in ("uniform map", "prior map"):
        if (chance, "energy_lesion") in pooled.index:
            energy = pooled.loc[(chance, "energy_lesion"), "mean"]
            pointing = pooled.loc[(chance, "pointing_hit"), "mean"]
            lines.append(
                f"| *{chance}* | | | | | | {_number(energy)} | | {_number(pointing)} | | |"
            )
    return "\n".join(lines) + "\n", selected


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("--sigma", type=float, default=0.05)
    parser.add_argument("--candidates", nargs="*")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    table, selected = summarise(args.run, args.sigma, args.candidates)
    if args.out:
        with atomic_file(args.out) as tmp:
            tmp.write_text(table)
    print(table)
    print(f"selected by validation AUC: {selected}")


if __name__ == "__main__":
    main()
