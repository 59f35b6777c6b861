"""The real DAG on the tiny configuration, through `snakemake` and through `dvc repro`."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.workflow.repo import clean_env, copy_repository, run

pytestmark = pytest.mark.slow

RUNS = [("baseline", 0), ("baseline", 1), ("sibnet", 0), ("sibnet", 1)]


def _outputs(root: Path) -> list[Path]:
    files = [root / "data/prepared/tiny/manifest.parquet", root / "data/prepared/tiny/dataset.json"]
    for method, seed in RUNS:
        files += [
            root / f"models/tiny/{method}/seed{seed}/classifier.pt",
            root / f"models/tiny/{method}/seed{seed}/history.csv",
            root / f"results/tiny/{method}/seed{seed}/metrics.json",
            root / f"results/tiny/{method}/seed{seed}/predictions.parquet",
        ]
    return files


@pytest.fixture(scope="module")
def snakemake_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    copy = copy_repository(tmp_path_factory.mktemp("snakemake") / "repo")
    run(["snakemake", "--cores", "all"], copy, env=clean_env())
    return copy


@pytest.fixture(scope="module")
def dvc_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    copy = copy_repository(tmp_path_factory.mktemp("dvc") / "repo")
    run(["dvc", "repro"], copy, env=clean_env())
    return copy


def test_snakemake_builds_every_output(snakemake_run: Path) -> None:
    for path in _outputs(snakemake_run):
        assert path.is_file(), path
    for method, seed in RUNS:
        log = snakemake_run / f"logs/train/tiny/{method}/seed{seed}.log"
        assert "epoch 2/2" in log.read_text()


def test_second_snakemake_invocation_finds_nothing_to_do(snakemake_run: Path) -> None:
    result = run(["snakemake", "--cores", "all"], snakemake_run, env=clean_env())
    assert "Nothing to be done" in result.stdout + result.stderr


def test_snakemake_reruns_only_what_a_params_change_touches(
    snakemake_run: Path, tmp_path: Path
) -> None:
    import yaml

    copy = tmp_path / "repo"
    shutil.copytree(snakemake_run, copy, symlinks=True)
    params = yaml.safe_load((copy / "params.yaml").read_text())
    params["evaluate"]["bootstrap"] = 20
    (copy / "params.yaml").write_text(yaml.safe_dump(params))
    result = run(["snakemake", "-n", "--cores", "all"], copy, env=clean_env())
    text = result.stdout + result.stderr
    assert "rule evaluate:" in text or "rule evaluate" in text
    assert "rule train" not in text and "rule prepare" not in text


def test_dvc_repro_builds_every_output_and_locks_each_stage(dvc_run: Path) -> None:
    for path in _outputs(dvc_run):
        assert path.is_file(), path
    lock = (dvc_run / "dvc.lock").read_text()
    for stage in ("prepare:", "train@baseline-0:", "train@baseline-1:", "evaluate@baseline-1:"):
        assert stage in lock
    status = run(["dvc", "status"], dvc_run, env=clean_env())
    assert "up to date" in status.stdout


def test_dvc_metrics_show_prints_the_results(dvc_run: Path) -> None:
    shown = json.loads(run(["dvc", "metrics", "show", "--json"], dvc_run).stdout)
    metrics = next(iter(shown.values()))["data"]
    for method, seed in RUNS:
        data = metrics[f"results/tiny/{method}/seed{seed}/metrics.json"]["data"]
        assert 0.0 <= data["macro_auc"] <= 1.0 and data["seed"] == seed


def test_both_engines_give_identical_bytes(snakemake_run: Path, dvc_run: Path) -> None:
    for path in _outputs(snakemake_run):
        twin = dvc_run / path.relative_to(snakemake_run)
        assert path.read_bytes() == twin.read_bytes(), path.relative_to(snakemake_run)


def test_every_stage_run_is_in_the_default_mlflow_store(snakemake_run: Path) -> None:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{snakemake_run / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("sibnet-tiny")
    runs = client.search_runs([experiment.experiment_id])
    stages = sorted(r.data.tags["sibnet.stage"] for r in runs)
    assert stages == ["evaluate"] * 4 + ["prepare"] + ["train"] * 4
    assert all(r.info.status == "FINISHED" for r in runs)
    commits = {r.data.tags["sibnet.git_commit"] for r in runs}
    assert len(commits) == 1 and len(commits.pop()) == 40
    evaluation = next(r for r in runs if r.data.tags["sibnet.stage"] == "evaluate")
    assert "test.macro_auc" in evaluation.data.metrics


def test_dvc_push_and_pull_with_the_default_remote(dvc_run: Path) -> None:
    run(["dvc", "push"], dvc_run)
    assert (dvc_run / "dvc-remote").is_dir()
    checkpoint = dvc_run / "models/tiny/baseline/seed0/classifier.pt"
    expected = checkpoint.read_bytes()
    checkpoint.unlink()
    shutil.rmtree(dvc_run / ".dvc" / "cache")
    run(["dvc", "pull"], dvc_run)
    assert checkpoint.read_bytes() == expected
    assert "up to date" in run(["dvc", "status"], dvc_run).stdout
