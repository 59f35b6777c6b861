"""Benchmark: the tiny pipeline through a real one-node SLURM cluster against a local run.

Starts the cluster of ``tests/workflow/slurm_cluster.py`` (munge, slurmctld, slurmd on this
machine; needs root and Debian's slurmctld slurmd slurm-client munge), then runs the tiny
configuration (``tests/workflow/params.yaml``) in two fresh copies of the repository, side by
side in time order: ``snakemake --cores N`` locally, and ``snakemake --profile
workflow/profiles/slurm`` with the test's flags (every job through ``sbatch``; the node has N
CPUs, so both run at most N one-thread jobs at a time). Reports both wall times and the
difference. Run from the repository root:

    python -m benchmarks.slurm_overhead [--one-run] [--out FILE]

``--one-run`` trims the configuration to baseline / seed 0 (8 jobs, as the CI test) instead of
the whole tiny DAG (23 jobs). Target (issue 8): the SLURM run adds no more than 60 s.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import tempfile
import time
from pathlib import Path

import yaml
from tests.workflow.repo import TINY_PARAMS, clean_env, copy_repository
from tests.workflow.slurm_cluster import SNAKEMAKE_SLURM, local_cluster

from benchmarks import write_result

TARGET_EXTRA_SECONDS = 60


def _copy(folder: Path, one_run: bool) -> Path:
    params = yaml.safe_load(TINY_PARAMS.read_text())
    if one_run:
        params["pipeline"] = {"methods": ["baseline"], "seeds": [0]}
    folder.mkdir(parents=True)
    params_file = folder / "params.yaml"
    params_file.write_text(yaml.safe_dump(params, sort_keys=False))
    return copy_repository(folder / "repo", params=params_file)


def _timed(command: list[str], cwd: Path) -> float:
    started = time.perf_counter()
    done = subprocess.run(command, cwd=cwd, env=clean_env(), capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stderr[-5000:]}")
    return time.perf_counter() - started


def _jobs(copy: Path) -> int:
    """Jobs Snakemake ran in ``copy``: m of its log's last "m of m steps (100%) done"."""
    (log,) = (copy / ".snakemake/log").glob("*.snakemake.log")
    return int(re.findall(r"(\d+) of \d+ steps \(100%\) done", log.read_text())[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--one-run", action="store_true", help="baseline / seed 0 only")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/slurm_overhead.json"))
    args = parser.parse_args()
    cores = os.cpu_count() or 1
    with tempfile.TemporaryDirectory() as folder, local_cluster():
        local = _copy(Path(folder) / "local", args.one_run)
        slurm = _copy(Path(folder) / "slurm", args.one_run)
        local_seconds = _timed(["snakemake", "--cores", str(cores)], local)
        slurm_seconds = _timed(SNAKEMAKE_SLURM, slurm)
        jobs = _jobs(local)
    result = {
        "configuration": "tiny, baseline/seed0" if args.one_run else "tiny, every run",
        "jobs": jobs,
        "cores": cores,
        "local_seconds": round(local_seconds, 1),
        "slurm_seconds": round(slurm_seconds, 1),
        "extra_seconds": round(slurm_seconds - local_seconds, 1),
        "target_extra_seconds": TARGET_EXTRA_SECONDS,
        "machine": f"{platform.machine()}, {cores} cores, Python {platform.python_version()}",
    }
    print(json.dumps(result, indent=2))
    write_result(args.out, result)


if __name__ == "__main__":
    main()
