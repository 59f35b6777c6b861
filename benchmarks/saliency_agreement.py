"""Benchmark: saliency agreement (binarise, convex hull, Dice, HD95, SSIM) for many maps.

Scores ``--maps`` smooth random 224×224 saliency maps against blob-shaped masks with
:func:`sibnet.metrics.saliency.saliency_agreement` in one process, and reports the wall time.
Target (issue 4): 1,000 maps in ≤ 30 s on 2 cores. Run from the repository root:

    python -m benchmarks.saliency_agreement [--maps 1000] [--size 224]

Results are printed and written to benchmarks/results/saliency_agreement.json.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from scipy import ndimage
from skimage.draw import disk

from benchmarks import write_result
from sibnet.metrics.saliency import saliency_agreement

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--maps", type=int, default=1000)
    parser.add_argument("--size", type=int, default=224)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    shape = (args.size, args.size)
    cases = []
    for _ in range(args.maps):
        low = ndimage.zoom(rng.random((8, 8)), args.size / 8, order=1)  # Grad-CAM-like
        mask = np.zeros(shape, dtype=bool)
        center = tuple(rng.integers(30, args.size - 30, size=2))
        mask[disk(center, rng.uniform(8, 30), shape=shape)] = True
        cases.append((low, mask))
    started = time.perf_counter()
    results = [saliency_agreement(saliency, mask) for saliency, mask in cases]
    seconds = time.perf_counter() - started
    payload = {
        "maps": args.maps,
        "size": args.size,
        "seconds": seconds,
        "maps_per_second": args.maps / seconds,
        "target_seconds_per_1000": 30.0,
        "mean_dice": float(np.mean([r["dice"] for r in results])),
    }
    out = ROOT / "benchmarks" / "results" / "saliency_agreement.json"
    write_result(out, payload)
    print(json.dumps(payload, indent=2))


if __name__ == "__main__":
    main()
