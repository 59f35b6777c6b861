"""Benchmark: the default pipeline (`snakemake --cores all` on params.yaml), end to end.

Runs the real DAG in a fresh copy of the repository and measures wall time and peak memory
(the largest total resident memory of the snakemake process tree, sampled every 0.1 s), then
reads the test macro AUC of every trained method and seed, the report's headline metrics and
the seconds each stage spent (from the MLflow runs: the work itself, without the time each
process takes to start and import; jobs run side by side, so these add up to more than the
wall time). Run from the repository root:

    python -m benchmarks.pipeline [--params params.yaml] [--keep DIR] [--out FILE]
                                  [--revision REV]

``--revision REV`` runs the repository as git revision ``REV`` holds it (code, workflow and
``dvc.yaml``; exported with ``git archive``) instead of the working tree, for a before/after
comparison on one machine: run it once with and once without. Either way the jobs run the
copy's own ``src`` (first on ``PYTHONPATH``).

Results are printed and written to ``--out`` (default benchmarks/results/pipeline.json).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import platform
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import psutil
from tests.workflow.repo import ROOT, clean_env, copy_repository, init_repository

from benchmarks import export_revision, write_result
from sibnet.config import load_params

TARGET_SECONDS = 600  # issue 4: every method and stage in <= 10 minutes
TARGET_PEAK_MB = 4000


def _tree_rss(process: psutil.Process) -> int:
    total = 0
    for member in [process, *process.children(recursive=True)]:
        with contextlib.suppress(psutil.Error):  # the process ended meanwhile
            total += member.memory_info().rss
    return total


def copy_revision(revision: str, destination: Path, params: Path) -> Path:
    """The repository's files at git revision ``revision`` in ``destination`` (a git repository
    of its own), ``params`` as its ``params.yaml``."""
    export_revision(revision, destination)
    shutil.copy2(params, destination / "params.yaml")
    return init_repository(destination)


def run_pipeline(copy: Path) -> dict[str, float]:
    """Run snakemake in ``copy`` on its own code; return wall seconds and peak memory in MB."""
    peak = 0
    started = time.perf_counter()
    process = subprocess.Popen(
        ["snakemake", "--cores", "all"],
        cwd=copy,
        env={**clean_env(), "PYTHONPATH": str(copy / "src")},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    watched = psutil.Process(process.pid)
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            with contextlib.suppress(psutil.Error):
                peak = max(peak, _tree_rss(watched))
            time.sleep(0.1)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    _, stderr = process.communicate()
    done.set()
    sampler.join()
    if process.returncode != 0:
        raise SystemExit(f"snakemake failed:\n{stderr[-5000:]}")
    return {"wall_seconds": time.perf_counter() - started, "peak_memory_mb": peak / 2**20}


def _stage_seconds(store: Path) -> dict[str, float]:
    """Seconds of MLflow run time per stage (sum over its runs)."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{store}")
    experiments = [e.experiment_id for e in client.search_experiments()]
    totals: dict[str, float] = {}
    for run in client.search_runs(experiments, max_results=10_000):
        stage = run.data.tags.get("sibnet.stage", "?")
        seconds = (run.info.end_time - run.info.start_time) / 1000
        totals[stage] = round(totals.get(stage, 0.0) + seconds, 1)
    return totals


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", type=Path, default=ROOT / "params.yaml")
    parser.add_argument("--keep", type=Path, help="run in this folder and keep it")
    parser.add_argument("--revision", help="run this git revision instead of the working tree")
    parser.add_argument(
        "--out", type=Path, default=ROOT / "benchmarks" / "results" / "pipeline.json"
    )
    args = parser.parse_args()
    params = load_params(args.params)
    if args.keep and args.keep.exists() and any(args.keep.iterdir()):
        raise SystemExit(f"--keep {args.keep}: not empty; the benchmark must start from nothing")
    with tempfile.TemporaryDirectory() as folder:
        where = (args.keep or Path(folder)) / "repo"
        if args.revision:
            copy = copy_revision(args.revision, where, args.params)
        else:
            copy = copy_repository(where, params=args.params)
        measured = run_pipeline(copy)
        dataset = params.prepare.dataset
        aucs = {}
        for method in params.pipeline.methods:
            for seed in params.pipeline.seeds:
                path = copy / f"results/{dataset}/{method}/seed{seed}/metrics.json"
                metrics = json.loads(path.read_text())
                aucs[f"{method}/seed{seed}"] = {
                    "macro_auc": metrics["macro_auc"],
                    "ci": metrics["macro_auc_ci"],
                }
        report = json.loads((copy / "results/metrics.json").read_text())
        summary = (copy / "results/report/summary.md").read_text()
        stage_seconds = _stage_seconds(copy / "mlflow.db")
    result = {
        **measured,
        "stage_seconds": stage_seconds,
        # Jobs run side by side (one thread each on 2 cores), so the sum can exceed the wall time.
        "stage_seconds_sum": round(sum(stage_seconds.values()), 1),
        "targets": {"wall_seconds": TARGET_SECONDS, "peak_memory_mb": TARGET_PEAK_MB},
        "test_macro_auc": aucs,
        "report": report,
        "revision": args.revision or "working tree",
        "params": str(
            args.params.relative_to(ROOT) if args.params.is_relative_to(ROOT) else args.params
        ),
        "machine": {"cpus": psutil.cpu_count(), "python": platform.python_version()},
    }
    write_result(args.out, result)
    args.out.with_name(args.out.stem + "_summary.md").write_text(summary)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
