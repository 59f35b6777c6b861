"""The real DAG on the tiny configuration, through `snakemake` and through `dvc repro`."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from sibnet.stages.report import CONDITIONAL_FILES, REPORT_FILES
from tests.workflow.repo import RUNS, clean_env, dry_run_rules, pipeline_outputs, run

pytestmark = pytest.mark.slow


def test_snakemake_builds_every_output(snakemake_run: Path) -> None:
    for path in pipeline_outputs(snakemake_run):
        assert path.is_file(), path
    for method, seed in RUNS:
        log = snakemake_run / f"logs/train/tiny/{method}/seed{seed}.log"
        assert "epoch 2/2" in log.read_text()


def test_the_report_covers_every_method_and_seed(snakemake_run: Path) -> None:
    report = snakemake_run / "results/report"
    names = {p.name for p in report.iterdir()} - {".snakemake_timestamp"}  # Snakemake's marker
    assert names == set(REPORT_FILES) - CONDITIONAL_FILES  # no report.pairs, no unlabeled
    summary = (snakemake_run / "results/report/summary.md").read_text()
    assert "2 methods × 2 seed(s)" in summary
    for section in ("Clean test macro AUC", "under Gaussian noise", "Saliency agreement"):
        assert section in summary
    metrics = json.loads((snakemake_run / "results/metrics.json").read_text())
    assert set(metrics["clean_auc"]) == {"baseline", "sibnet"}
    assert set(metrics["noise_auc"]["sibnet"]) == {
        f"sigma_{s:g}" for s in (0, 0.005, 0.01, 0.05, 0.1)
    }
    assert set(metrics["saliency"]["baseline"]) >= {"dice", "hd95", "ssim", "pointing_hit"}
    # Every method in segment.modes (frozen); the reference (baseline) in all three.
    assert set(metrics["segmentation"]["sibnet"]) == {"frozen"}
    assert set(metrics["segmentation"]["baseline"]) == {"frozen", "finetune", "scratch"}
    for method, seed in RUNS:
        segmenters = snakemake_run / f"models/tiny/{method}/seed{seed}/segmenters"
        assert len(list(segmenters.glob("*.pt"))) == (3 if method == "baseline" else 1)


def test_second_snakemake_invocation_finds_nothing_to_do(snakemake_run: Path) -> None:
    result = run(["snakemake", "--cores", "all"], snakemake_run, env=clean_env())
    assert "Nothing to be done" in result.stdout + result.stderr


def _rules_after_change(snakemake_run: Path, tmp_path: Path, section: str, **values) -> set[str]:
    """The rules a dry run would run after changing some keys of one params section."""
    import yaml

    copy = tmp_path / "repo"
    shutil.copytree(snakemake_run, copy, symlinks=True)
    params = yaml.safe_load((copy / "params.yaml").read_text())
    params[section].update(values)
    (copy / "params.yaml").write_text(yaml.safe_dump(params))
    return dry_run_rules(copy)


def test_snakemake_reruns_only_what_a_params_change_touches(
    snakemake_run: Path, tmp_path: Path
) -> None:
    rules = _rules_after_change(snakemake_run, tmp_path, "evaluate", bootstrap=20)
    assert rules == {"evaluate", "report", "audit", "all"}


def test_a_robustness_change_reruns_robustness_the_report_and_the_audit_only(
    snakemake_run: Path, tmp_path: Path
) -> None:
    rules = _rules_after_change(snakemake_run, tmp_path, "robustness", sigmas=[0.0, 0.2])
    assert rules == {"robustness", "report", "audit", "all"}


def test_dvc_repro_builds_every_output_and_locks_each_stage(dvc_run: Path) -> None:
    for path in pipeline_outputs(dvc_run):
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
        saliency = metrics[f"results/tiny/{method}/seed{seed}/saliency.json"]["data"]
        assert 0.0 <= saliency["metrics"]["dice"]["mean"] <= 1.0
    summary = metrics["results/metrics.json"]["data"]
    assert 0.0 <= summary["clean_auc"]["sibnet"]["mean"] <= 1.0


def test_dvc_plots_show_renders_the_report_data(dvc_run: Path) -> None:
    shown = json.loads(run(["dvc", "plots", "show", "--json"], dvc_run).stdout)
    noise = next(v for k, v in shown["data"].items() if "noise" in k)
    values = noise[0]["content"]["data"]["values"]
    assert {v["field"] for v in values} == {"baseline", "sibnet"}
    assert {float(v["sigma"]) for v in values} == {0.0, 0.005, 0.01, 0.05, 0.1}


def test_both_engines_give_identical_bytes(snakemake_run: Path, dvc_run: Path) -> None:
    for path in pipeline_outputs(snakemake_run):
        twin = dvc_run / path.relative_to(snakemake_run)
        assert path.read_bytes() == twin.read_bytes(), path.relative_to(snakemake_run)


def test_every_stage_run_is_in_the_default_mlflow_store(snakemake_run: Path) -> None:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{snakemake_run / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("sibnet-tiny")
    runs = client.search_runs([experiment.experiment_id])
    stages = sorted(r.data.tags["sibnet.stage"] for r in runs)
    assert stages == sorted(
        ["evaluate"] * 4
        + ["audit", "prepare", "report"]
        + ["robustness", "saliency", "segment", "train"] * 4
    )
    assert all(r.info.status == "FINISHED" for r in runs)
    commits = {r.data.tags["sibnet.git_commit"] for r in runs}
    assert len(commits) == 1 and len(commits.pop()) == 40
    evaluation = next(r for r in runs if r.data.tags["sibnet.stage"] == "evaluate")
    assert "test.macro_auc" in evaluation.data.metrics
    report = next(r for r in runs if r.data.tags["sibnet.stage"] == "report")
    assert "clean_auc.sibnet.mean" in report.data.metrics
    artifacts = {a.path for a in client.list_artifacts(report.info.run_id, "report")}
    assert "report/summary.md" in artifacts


@pytest.mark.parametrize("engine", ["snakemake", "dvc"])
def test_one_invocation_tags_all_its_runs_and_the_audit_names_it(
    engine: str, snakemake_run: Path, dvc_run: Path
) -> None:
    """Every MLflow run of one `snakemake` / `dvc repro` carries the same sibnet.invocation
    (and sibnet.engine), and the audit's lineage.json names that invocation with every job."""
    from mlflow.tracking import MlflowClient

    finished = snakemake_run if engine == "snakemake" else dvc_run
    client = MlflowClient(tracking_uri=f"sqlite:///{finished / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("sibnet-tiny")
    runs = client.search_runs([experiment.experiment_id])
    invocations = {r.data.tags["sibnet.invocation"] for r in runs}
    assert len(invocations) == 1, invocations
    (invocation,) = invocations
    assert invocation.startswith(f"{engine}-")
    assert {r.data.tags["sibnet.engine"] for r in runs} == {engine}
    same = client.search_runs(
        [experiment.experiment_id], filter_string=f"tags.`sibnet.invocation` = '{invocation}'"
    )
    assert len(same) == len(runs) == 23
    lineage = json.loads((finished / "results/audit/lineage.json").read_text())
    ((named),) = lineage["invocations"]
    assert named["id"] == invocation and named["engine"] == engine
    assert len(named["jobs"]) == len(lineage["jobs"]) == 22
