"""The tiny pipeline through a real one-node SLURM cluster (`workflow/profiles/slurm`).

`slurm_cluster.local_cluster` starts munge, slurmctld and slurmd on this machine. That needs
root and Debian's slurmctld, slurmd, slurm-client and munge packages: as root with apt-get the
tests install them themselves (`tests.system_tools.provide`); elsewhere they are skipped with the
command that installs them, and `.ci/run` (SIBNET_REQUIRE_SYSTEM_TOOLS=1) fails instead.

Every job must go through sbatch, give the same bytes as the local run, and a failed job
(corrupt input, bad params, out of memory) must surface with its log, and the rerun must redo
only the unfinished jobs.
"""

from __future__ import annotations

import os
import re
import subprocess
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest
import yaml

from sibnet.dag import STAGES
from tests.system_tools import SLURM as SLURM_PACKAGES
from tests.system_tools import provide, require_root
from tests.workflow.repo import TINY_PARAMS, clean_env, copy_repository, run
from tests.workflow.slurm_cluster import SNAKEMAKE_SLURM, local_cluster
from tests.workflow.test_lineage import _hashes

pytestmark = pytest.mark.slow

SLURM = SNAKEMAKE_SLURM
SUBMITTED = re.compile(r"Job \d+ has been submitted with SLURM jobid (\d+) \(log: ([^)]+)\)")
STAMP = re.compile(r"^\[(\w{3} \w{3} +\d+ \d\d:\d\d:\d\d \d{4})\]$", re.MULTILINE)


@pytest.fixture(scope="module")
def cluster() -> Iterator[Path]:
    require_root(
        "the one-node SLURM cluster (slurmctld, slurmd, munged)",
        "sudo -E python3 -m pytest tests/workflow/test_slurm.py",
    )
    provide(SLURM_PACKAGES)
    with local_cluster() as state:
        yield state


def _slurm(
    copy: Path, *targets: str, resources: tuple[str, ...] = (), check: bool = True
) -> subprocess.CompletedProcess[str]:
    """Run Snakemake through the SLURM profile; ``resources`` join SLURM's --set-resources."""
    # targets first and extra resources last: --set-resources takes every word that follows
    args = [SLURM[0], *targets, *SLURM[1:], *resources]
    if check:
        return run(args, copy, env=clean_env())
    return subprocess.run(
        args, cwd=copy, env=clean_env(), capture_output=True, text=True, timeout=900, check=False
    )


def _job_stats(output: str) -> dict[str, int]:
    """Snakemake's first "Job stats" table: rule -> number of jobs."""
    table = output.split("Job stats:", 1)[1].split("total", 1)[0]
    return {m[1]: int(m[2]) for m in re.finditer(r"^(\w+)\s+(\d+)\s*$", table, re.MULTILINE)}


def _logged_seconds(copy: Path) -> float:
    """Seconds from the first to the last time stamp of the copy's (only) Snakemake log."""
    (log,) = (copy / ".snakemake/log").glob("*.snakemake.log")
    stamps = [datetime.strptime(s, "%a %b %d %H:%M:%S %Y") for s in STAMP.findall(log.read_text())]
    return (max(stamps) - min(stamps)).total_seconds()


def _one_run_copy(tmp_path: Path) -> Path:
    """A copy of the repository whose params are the tiny ones trimmed to baseline, seed 0
    (8 jobs; keeps the CI short). Per-run outputs depend only on that run's params, so they
    equal the full local run's."""
    params = yaml.safe_load(TINY_PARAMS.read_text())
    params["pipeline"] = {"methods": ["baseline"], "seeds": [0]}
    params_file = tmp_path / "params.yaml"
    params_file.write_text(yaml.safe_dump(params, sort_keys=False))
    return copy_repository(tmp_path / "repo", params=params_file)


ONE_RUN = ("data/prepared", "models/tiny/baseline/seed0", "results/tiny/baseline/seed0")


def test_every_job_goes_through_sbatch_and_matches_the_local_run(
    cluster: Path, snakemake_run: Path, tmp_path: Path
) -> None:
    copy = _one_run_copy(tmp_path)
    started = time.monotonic()
    result = _slurm(copy)
    seconds = time.monotonic() - started
    output = result.stdout + result.stderr

    jobs = _job_stats(output)
    jobs.pop("all")  # the default target's job has no command: Snakemake does it itself
    expected = len(STAGES)  # one run (one method, one seed): one job per stage
    assert sum(jobs.values()) == expected, jobs
    submitted = SUBMITTED.findall(output)
    assert len(submitted) == expected, output[-4000:]
    assert len({jobid for jobid, _ in submitted}) == expected, "one SLURM job id per job"
    (log,) = (copy / ".snakemake/log").glob("*.snakemake.log")
    assert len(SUBMITTED.findall(log.read_text())) == expected, "the log names every job id"
    for jobid, slurm_log in submitted:  # the plugin's SLURM log folder, kept by the profile
        path = copy / slurm_log if not os.path.isabs(slurm_log) else Path(slurm_log)
        assert path.is_file() and path.name == f"{jobid}.log", slurm_log
        assert path.is_relative_to(copy / "logs/slurm"), slurm_log

    local, remote = _hashes(snakemake_run, ONE_RUN), _hashes(copy, ONE_RUN)
    assert len(local) > 10 and set(local) == set(remote)
    assert [k for k in local if local[k] != remote[k]] == []

    # The cluster jobs inherit the submitting snakemake's invocation: one id for all runs.
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{copy / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("sibnet-tiny")
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == expected
    assert len({r.data.tags["sibnet.invocation"] for r in runs}) == 1
    assert {r.data.tags["sibnet.engine"] for r in runs} == {"snakemake"}

    print(f"\nSLURM run (8 jobs): {seconds:.0f} s wall ({_logged_seconds(copy):.0f} s logged)")


def test_a_failed_cluster_job_names_its_log_and_a_rerun_resumes(
    cluster: Path, tmp_path: Path
) -> None:
    """A job fails at run time (its input checkpoint is corrupt): Snakemake exits non-zero
    naming the rule and its log; once the checkpoint is repaired, the rerun redoes only the
    jobs that had not finished (neither prepare nor train)."""
    copy = _one_run_copy(tmp_path)

    checkpoint = copy / "models/tiny/baseline/seed0/classifier.pt"
    first = _slurm(copy, str(checkpoint.relative_to(copy)))
    assert _job_stats(first.stdout + first.stderr) == {"prepare": 1, "train": 1}

    # Corrupt the checkpoint, keeping its times: Snakemake sees nothing to redo upstream, and
    # the jobs reading it fail on the cluster.
    good, times = checkpoint.read_bytes(), checkpoint.stat()
    checkpoint.write_bytes(b"not a checkpoint")
    os.utime(checkpoint, ns=(times.st_atime_ns, times.st_mtime_ns))

    failed = _slurm(copy, check=False)
    output = failed.stdout + failed.stderr
    assert failed.returncode != 0, output[-4000:]
    assert "prepare" not in _job_stats(output) and "train" not in _job_stats(output)
    rules = re.findall(r"Error in rule (\w+):", output)
    assert rules and set(rules) <= {"evaluate", "robustness", "saliency", "segment"}, output
    for rule in rules:
        log = f"logs/{rule}/tiny/baseline/seed0.log"
        assert log in output, (rule, output[-4000:])
        assert (copy / log).read_text().strip(), "the stage's log holds its error"
    assert SUBMITTED.search(output), "the failed jobs ran on the cluster"
    done = set(re.findall(r"Finished jobid: \d+ \(Rule: (\w+)\)", output))

    checkpoint.write_bytes(good)
    os.utime(checkpoint, ns=(times.st_atime_ns, times.st_mtime_ns))
    rerun = _slurm(copy)
    redone = _job_stats(rerun.stdout + rerun.stderr)
    assert "prepare" not in redone and "train" not in redone, redone
    assert set(rules) <= set(redone) and {"report", "audit"} <= set(redone), redone
    assert not done & set(redone), f"finished before the failure, redone: {done & set(redone)}"
    assert (copy / "results/audit/lineage.json").is_file()


def _failed_train(copy: Path, *resources: str) -> str:
    """Run up to the train job, which must fail on the cluster; Snakemake's output."""
    failed = _slurm(copy, TRAINED, resources=resources, check=False)
    output = failed.stdout + failed.stderr
    assert failed.returncode != 0, output[-4000:]
    assert set(re.findall(r"Error in rule (\w+):", output)) == {"train"}, output[-4000:]
    assert "logs/train/tiny/baseline/seed0.log" in output, output[-4000:]
    assert SUBMITTED.search(output), "the failed job ran on the cluster"
    return output


TRAINED = "models/tiny/baseline/seed0/classifier.pt"


def test_bad_params_and_out_of_memory_fail_the_job_and_the_rerun_resumes(
    cluster: Path, tmp_path: Path
) -> None:
    """Two failures on the cluster, then a rerun that redoes only the failed job.

    Bad params: ``train.device: cuda`` on a node without a GPU is valid YAML for the schema but
    fails when the job starts; the job's log holds sibnet's one-line error. Out of memory: the
    train job given 200 MB (``--set-resources train:mem_mb=200``) is killed by SLURM (its SLURM
    log says "Exceeded job memory limit"), and Snakemake reports the rule failed with its log
    paths (prepare, finished, is not redone)."""
    copy = _one_run_copy(tmp_path)
    params = yaml.safe_load((copy / "params.yaml").read_text())
    params["train"]["device"] = "cuda"
    (copy / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    output = _failed_train(copy)
    assert _job_stats(output) == {"prepare": 1, "train": 1}
    log = (copy / "logs/train/tiny/baseline/seed0.log").read_text()
    assert "sibnet train: error: train.device is 'cuda'" in log, log[-2000:]

    params["train"]["device"] = "auto"
    (copy / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    output = _failed_train(copy, "train:mem_mb=200")
    assert _job_stats(output) == {"train": 1}, "prepare was not redone"
    ((_, slurm_log),) = SUBMITTED.findall(output)
    assert "Exceeded job memory limit" in Path(slurm_log).read_text(), slurm_log
    assert not (copy / TRAINED).exists()

    rerun = _slurm(copy, TRAINED)
    assert _job_stats(rerun.stdout + rerun.stderr) == {"train": 1}
    assert (copy / TRAINED).is_file()
