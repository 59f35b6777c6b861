"""Benchmark: what each stage's job pays before its real work — imports, params, the MLflow run.

For every stage of the pipeline (one method, one seed of the tiny configuration, MLflow tracking
on in the default embedded store, as a job of the default pipeline runs), three figures:

- ``import_s``: the import overhead, ``python -X importtime -c "import sibnet.cli, <stage>"``:
  the sum of every module's own import time, what the job pays before the CLI can start;
- ``to_work_s``: wall time from spawning the job's ``sibnet <stage> ...`` command to its first
  real work, the moment its MLflow run is open (imports, params validation, the tracking store
  and the run itself are paid by then);
- ``job_s``: the whole job, for scale.

With ``--compare REV`` the same jobs run, interleaved, on the code of git revision ``REV``
(exported from git into a scratch folder and put first on ``PYTHONPATH``), so the figures
before and after a change come from one run on one machine. Each job is run ``--repeats``
times (median kept). Run from the repository root:

    python -m benchmarks.startup [--compare HEAD~1] [--repeats 3] [--out FILE]

Results go to ``--out`` (default benchmarks/results/startup.json).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml
from tests.workflow.repo import ROOT, TINY_PARAMS, clean_env

from benchmarks import export_revision, write_result
from sibnet.dag import STAGES, command, expand

TARGET_IMPORT_S = 2.0
TARGET_TO_WORK_S = 3.0

SHIM = """\
import contextlib, json, sys, time
import importlib
marks = {}
stage, out = sys.argv[1], sys.argv[2]
module = importlib.import_module("sibnet.stages." + stage)
original = module.start_run


@contextlib.contextmanager
def timed(*args, **kwargs):
    with original(*args, **kwargs) as tracker:
        marks.setdefault("work", time.time())
        yield tracker


module.start_run = timed
from sibnet.cli import main

code = main(sys.argv[3:])
marks["end"] = time.time()
open(out, "w").write(json.dumps(marks))
sys.exit(code)
"""
"""Runs ``sibnet <stage> ...`` and writes when the stage's MLflow run opened and when it ended.
Importing the stage module before ``main`` changes nothing: ``main`` imports it first thing."""


def import_seconds(stage: str, env: dict[str, str]) -> float:
    """Sum of the modules' own import times of ``import sibnet.cli, sibnet.stages.<stage>``."""
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", f"import sibnet.cli, sibnet.stages.{stage}"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    own = re.findall(r"^import time:\s+(\d+) \|", done.stderr, re.MULTILINE)
    return sum(int(us) for us in own) / 1e6


def job_seconds(stage: str, args: list[str], work: Path, env: dict[str, str]) -> dict[str, float]:
    """Run one stage job in ``work``: seconds from spawn to its first real work, and in all."""
    marks_file = work / f"marks-{stage}.json"
    spawned = time.time()
    done = subprocess.run(
        [sys.executable, "-c", SHIM, stage, str(marks_file), *args],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise SystemExit(f"sibnet {stage} failed:\n{done.stderr[-4000:]}")
    marks = json.loads(marks_file.read_text())
    return {"to_work_s": marks["work"] - spawned, "job_s": marks["end"] - spawned}


def stage_arguments(work: Path, params: Path) -> dict[str, list[str]]:
    """The command line of every stage for baseline, seed 0, inputs and outputs under ``work``."""
    values = {"dataset": "tiny", "method": "baseline", "seed": "0"}
    lines = {}
    for name, spec in STAGES.items():
        paths = {k: expand(t, **values) for k, t in {**spec.inputs, **spec.outputs}.items()}
        line = command(spec, paths, params_file=str(params), method="baseline", seed="0")
        lines[name] = line.split()[1:]
    return lines


def measure(
    variants: dict[str, dict[str, str]], repeats: int, scratch: Path
) -> dict[str, dict[str, dict[str, float]]]:
    """Every stage's figures for each variant (name → environment), jobs interleaved."""
    params = yaml.safe_load(TINY_PARAMS.read_text())
    params["pipeline"] = {"methods": ["baseline"], "seeds": [0]}
    samples: dict[str, dict[str, dict[str, list[float]]]] = {v: {} for v in variants}
    for repeat in range(repeats):
        works = {}
        for variant in variants:
            work = scratch / f"{variant}-{repeat}"
            work.mkdir(parents=True)
            (work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
            works[variant] = work
        for stage in STAGES:
            for variant, env in variants.items():
                work = works[variant]
                args = stage_arguments(work, work / "params.yaml")[stage]
                figures = {"import_s": import_seconds(stage, env)}
                figures |= job_seconds(stage, args, work, env)
                for key, value in figures.items():
                    samples[variant].setdefault(stage, {}).setdefault(key, []).append(value)
                print(variant, stage, {k: round(v, 2) for k, v in figures.items()}, flush=True)
        for work in works.values():
            shutil.rmtree(work)
    return {
        variant: {
            stage: {key: round(statistics.median(values), 3) for key, values in figures.items()}
            for stage, figures in stages.items()
        }
        for variant, stages in samples.items()
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--compare", help="also measure this git revision's code (e.g. HEAD~1)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--out", type=Path, default=ROOT / "benchmarks" / "results" / "startup.json"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        scratch = Path(folder)
        src = str(ROOT / "src")
        variants = {"current": {**clean_env(), "PYTHONPATH": src}}
        if args.compare:
            before = export_revision(args.compare, scratch / "before", "src") / "src"
            variants = {args.compare: {**clean_env(), "PYTHONPATH": str(before)}, **variants}
        results = measure(variants, args.repeats, scratch / "runs")
    result = {
        "stages": results,
        "targets": {"import_s": TARGET_IMPORT_S, "to_work_s": TARGET_TO_WORK_S},
        "repeats": args.repeats,
        "compare": args.compare,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
    }
    write_result(args.out, result)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
