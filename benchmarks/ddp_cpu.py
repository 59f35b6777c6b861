"""Benchmark: data-parallel training on the CPU — N gloo processes against one N-thread process.

On a CPU node, ``train.processes: N`` with ``threads: 1`` and ``processes: 1`` with
``threads: N`` use the same cores; this measures which trains faster, on the same prepared
phantom, with the real ``sibnet train`` command (so the processes' start under ``torchrun`` is
included). Run from the repository root:

    python -m benchmarks.ddp_cpu [--images 800] [--size 128] [--epochs 3] [--method sibnet]
                                 [--cores 2] [--out FILE]

Per setting: wall time of the command, and the seconds per epoch in steady state (between the
first and the last epoch's log lines, so without start-up and the first epoch), both as images/s
of training; the final validation macro AUC of each (they differ: batch-norm statistics are
per process). Writes ``benchmarks/results/ddp_cpu.json``.
"""

from __future__ import annotations

import argparse
import json
import platform
import re
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import pandas as pd
import yaml

from benchmarks import write_result
from sibnet.data.prepared import PreparedDataset

EPOCH_LINE = re.compile(r"^(\S+ \S+) INFO .*epoch (\d+)/(\d+):", re.MULTILINE)


def _params(args: argparse.Namespace, processes: int, threads: int) -> dict:
    return {
        "prepare": {
            "dataset": "ddp",
            "phantom": {"n_images": args.images, "size": args.size, "seed": 0},
        },
        "train": {
            "epochs": args.epochs,
            "batch_size": 16,
            "threads": threads,
            "processes": processes,
            "device": "cpu",
        },
        "methods": {
            "baseline": {"objective": "cross_entropy"},
            "sibnet": {"objective": "sibnet", "attention": "se"},
        },
        "pipeline": {"methods": ["baseline", "sibnet"], "seeds": [0]},
        "tracking": {"enabled": False},
    }


def _sibnet(*argv: str, cwd: Path) -> tuple[float, str]:
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "sibnet.cli", *argv], cwd=cwd, capture_output=True, text=True
    )
    if done.returncode != 0:
        raise SystemExit(f"sibnet {' '.join(argv)} failed:\n{done.stderr[-5000:]}")
    return time.perf_counter() - started, done.stderr


def _steady_epoch_seconds(log: str) -> float:
    stamps = [datetime.strptime(m[1], "%Y-%m-%d %H:%M:%S,%f") for m in EPOCH_LINE.finditer(log)]
    return (stamps[-1] - stamps[0]).total_seconds() / (len(stamps) - 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=800)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--method", default="sibnet", choices=["baseline", "sibnet"])
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/ddp_cpu.json"))
    args = parser.parse_args()
    if args.epochs < 2:
        parser.error("--epochs must be at least 2 (steady-state epochs are timed)")
    settings = {"one process": (1, args.cores), f"{args.cores} processes": (args.cores, 1)}
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        for name, (processes, threads) in settings.items():
            params = root / f"{processes}.yaml"
            params.write_text(yaml.safe_dump(_params(args, processes, threads)))
            if not (root / "prepared").exists():
                _sibnet("prepare", "--params", params.name, "--prepared", "prepared", cwd=root)
            train_images = len(PreparedDataset.open(root / "prepared").indices("train"))
            out = root / str(processes)
            wall, log = _sibnet(
                *("train", "--params", params.name, "--prepared", "prepared"),
                *("--checkpoint", f"{out}/classifier.pt", "--history", f"{out}/history.csv"),
                *("--method", args.method, "--seed", "0"),
                cwd=root,
            )
            epoch = _steady_epoch_seconds(log)
            history = pd.read_csv(out / "history.csv")
            rows.append(
                {
                    "setting": name,
                    "processes": processes,
                    "threads_per_process": threads,
                    "wall_seconds": round(wall, 1),
                    "images_per_second_wall": round(train_images * args.epochs / wall, 1),
                    "steady_epoch_seconds": round(epoch, 2),
                    "images_per_second_steady": round(train_images / epoch, 1),
                    "final_val_auc": round(float(history["val_auc"].iloc[-1]), 4),
                }
            )
            print(json.dumps(rows[-1]))
    one, many = rows
    result = {
        "method": args.method,
        "images": args.images,
        "size": args.size,
        "epochs": args.epochs,
        "batch_size": 16,
        "train_images": train_images,
        "settings": rows,
        "steady_speed_ratio_processes_over_threads": round(
            many["images_per_second_steady"] / one["images_per_second_steady"], 2
        ),
        "machine": f"{platform.machine()}, Python {platform.python_version()}",
    }
    print(json.dumps(result, indent=2))
    write_result(args.out, result)


if __name__ == "__main__":
    main()
