"""Benchmark: how the scored Grad-CAM layer changes saliency agreement, per class.

At the default 128×128 phantom, ``resnet10_small``'s last feature map (``layer4``) is 8×8: one
cell covers 16×16 pixels, while a nodule is about 12 px across, so the map's resolution caps
small-lesion Dice. This scores the classifiers of a finished pipeline run (``--run``, e.g. the
folder kept by ``python -m benchmarks.pipeline --keep DIR``, then ``DIR/repo``) with
``saliency.layer`` set to each of ``--layers`` and compares, per class, mean Dice, energy in the
lesion and the pointing game (mean over seeds, with the per-seed spread). Run from the
repository root:

    python -m benchmarks.saliency_layer --run DIR/repo [--methods baseline sibnet]
        [--layers layer4 layer3]

Writes ``benchmarks/results/saliency_layer.json``.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from benchmarks import write_result
from sibnet.config import load_params, validate_params
from sibnet.stages.saliency import saliency

ROOT = Path(__file__).resolve().parents[1]
SCORES = ("dice", "energy_lesion", "pointing_hit")


def _scores(params: Any, run: Path, method: str, seed: int, layer: str) -> pd.DataFrame:
    raw = params.model_dump(mode="json")
    raw["saliency"] = {**raw["saliency"], "layer": layer}
    raw["tracking"] = {**raw["tracking"], "enabled": False}
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder)
        table = saliency(
            validate_params(raw),
            prepared=run / "data/prepared" / params.prepare.dataset,
            checkpoint=run / f"models/{params.prepare.dataset}/{method}/seed{seed}/classifier.pt",
            saliency=out / "saliency.parquet",
            summary=out / "saliency.json",
            examples=out / "examples.npz",
            method=method,
            seed=seed,
        )
    return table.assign(layer=layer)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, required=True, help="a finished pipeline folder")
    parser.add_argument("--methods", nargs="+", default=["baseline", "sibnet"])
    parser.add_argument("--layers", nargs="+", default=["layer4", "layer3"])
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/saliency_layer.json")
    args = parser.parse_args()
    params = load_params(args.run / "params.yaml")
    rows = pd.concat(
        [
            _scores(params, args.run, method, seed, layer)
            for method in args.methods
            for seed in params.pipeline.seeds
            for layer in args.layers
        ],
        ignore_index=True,
    )
    rows = rows[rows["map"] != "uniform"]
    per_seed = (
        rows.assign(method=np.where(rows["map"] == "prior", "prior map", rows["method"]))
        .groupby(["layer", "method", "class", "seed"])[list(SCORES)]
        .mean()
    )
    summary = per_seed.groupby(["layer", "method", "class"]).agg(["mean", "std"]).round(4)
    result: dict[str, Any] = {
        "run": str(args.run),
        "image_size": params.prepare.phantom.size,
        "seeds": list(params.pipeline.seeds),
        "scores": {
            f"{layer}/{method}/{cls}": {
                f"{score}_{stat}": (None if np.isnan(v) else float(v))
                for (score, stat), v in values.items()
            }
            for (layer, method, cls), values in summary.iterrows()
        },
        "maps_per_seed": int(
            (rows["map"] == "gradcam").sum()
            // (len(args.layers) * len(args.methods) * len(params.pipeline.seeds))
        ),
    }
    write_result(args.out, result)
    table = summary.xs("mean", axis=1, level=1).unstack("layer")
    print(table.to_string())


if __name__ == "__main__":
    main()
