"""The Snakemake rules and dvc.yaml come from one definition and agree job by job."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from sibnet.cli import main
from sibnet.dag import STAGES, dvc_yaml
from tests.workflow.repo import ROOT, clean_env, copy_repository, run


def test_committed_dvc_yaml_is_generated_from_the_stage_definitions() -> None:
    assert (ROOT / "dvc.yaml").read_text() == dvc_yaml(), "run `sibnet dvc-yaml`"
    assert main(["dvc-yaml", "--check", "--output", str(ROOT / "dvc.yaml")]) == 0


def test_dvc_yaml_check_detects_drift(tmp_path: Path) -> None:
    stale = tmp_path / "dvc.yaml"
    stale.write_text("stages: {}\n")
    assert main(["dvc-yaml", "--check", "--output", str(stale)]) == 1
    assert main(["dvc-yaml", "--output", str(stale)]) == 0
    assert stale.read_text() == dvc_yaml()


def test_dvc_stages_declare_the_keys_each_stage_reads() -> None:
    stages = yaml.safe_load(dvc_yaml())["stages"]
    assert set(stages) == set(STAGES)
    assert stages["train"]["params"] == ["prepare", "train", "methods.${item.method}"]
    assert stages["evaluate"]["params"] == ["evaluate", "methods.${item.method}"]
    assert "metrics" in stages["evaluate"] and "plots" in stages["train"]


@pytest.fixture(scope="module")
def copy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return copy_repository(tmp_path_factory.mktemp("dag") / "repo")


def _snakemake_commands(copy: Path) -> list[str]:
    result = run(["snakemake", "-n", "-p", "--forceall", "--cores", "2"], copy, env=clean_env())
    commands = []
    for line in result.stdout.splitlines() + result.stderr.splitlines():
        line = line.strip()
        if line.startswith("Shell command: "):
            command = line.removeprefix("Shell command: ")
            if command != "None":  # `rule all` has no command
                commands.append(command.split(" > logs/")[0])
    return sorted(commands)


def _dvc_commands(copy: Path) -> list[str]:
    from dvc.repo import Repo

    with Repo(str(copy)) as repo:
        return sorted(stage.cmd for stage in repo.index.stages)


def test_snakemake_and_dvc_run_the_same_commands(copy: Path) -> None:
    snakemake = _snakemake_commands(copy)
    # prepare + (train, evaluate, robustness, saliency, segment) × 2 methods × 2 seeds + report
    # + audit
    assert len(snakemake) == 1 + 5 * 2 * 2 + 1 + 1
    assert snakemake == _dvc_commands(copy)


def test_dvc_orders_the_report_after_every_run(copy: Path) -> None:
    from dvc.repo import Repo

    with Repo(str(copy)) as repo:
        graph = repo.index.graph
        (report,) = [s for s in graph if s.name == "report"]
        upstream = {s.name.split("@")[0] for s in graph.successors(report)}
    # The report's folder dependencies contain the outputs of the per-run stages.
    assert {"train", "evaluate", "robustness", "saliency", "segment"} <= upstream


def test_the_audit_comes_last_in_both_engines(copy: Path) -> None:
    from dvc.repo import Repo

    with Repo(str(copy)) as repo:
        graph = repo.index.graph
        (audit,) = [s for s in graph if s.name == "audit"]
        upstream = {s.name.split("@")[0] for s in graph.successors(audit)}
        assert not list(graph.predecessors(audit))  # nothing depends on it
    assert {"prepare", "train", "evaluate", "robustness", "saliency", "segment", "report"} <= (
        upstream
    )
    result = run(["snakemake", "-n", "--forceall", "--cores", "2"], copy, env=clean_env())
    jobs = [line.split()[1] for line in result.stdout.splitlines() if line.startswith("rule ")]
    assert jobs.count("audit:") == 1  # the default target `all` needs the audit


def test_dvc_plots_are_declared_over_the_report_data() -> None:
    document = yaml.safe_load(dvc_yaml())
    files = {f for plot in document["plots"] for spec in plot.values() for f in spec["y"]}
    report = yaml.safe_load(dvc_yaml())["stages"]["report"]
    outs = {next(iter(o)) if isinstance(o, dict) else o for o in report["outs"]}
    assert files <= outs
    noise = next(
        spec for plot in document["plots"] for spec in plot.values() if "sigma" in str(spec)
    )
    assert noise["y"]["results/plots/auc_vs_noise.csv"] == "${pipeline.methods}"


def test_snakemake_refuses_command_line_overrides(copy: Path) -> None:
    with pytest.raises(AssertionError, match=r"--config key=value"):
        run(["snakemake", "-n", "--cores", "1", "--config", "train={}"], copy, env=clean_env())


def test_snakemake_validates_params_before_scheduling(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"train": {"epochs": 0}}))
    copy = copy_repository(tmp_path / "repo", params=bad)
    with pytest.raises(AssertionError, match=r"train\.epochs"):
        run(["snakemake", "-n", "--cores", "1"], copy, env=clean_env())


def test_the_local_profile_is_accepted(copy: Path) -> None:
    result = run(
        ["snakemake", "-n", "--forceall", "--profile", "workflow/profiles/default"],
        copy,
        env=clean_env(),
    )
    assert "prepare" in result.stdout + result.stderr


@pytest.mark.parametrize("params_file", [ROOT / "params.yaml", ROOT / "tests/workflow/params.yaml"])
def test_params_files_write_out_every_key_dvc_reads(params_file: Path) -> None:
    # DVC reads declared params keys straight from the YAML file, without the schema's defaults.
    raw = yaml.safe_load(params_file.read_text())
    for name, spec in yaml.safe_load(dvc_yaml())["stages"].items():
        for method in raw["pipeline"]["methods"]:
            for key in spec["params"]:
                value = raw
                for part in key.replace("${item.method}", method).split("."):
                    assert isinstance(value, dict) and part in value, f"{name}: {key} ({method})"
                    value = value[part]


def test_train_jobs_ask_for_a_gpu_and_threads_per_process(tmp_path: Path) -> None:
    """train.processes: 2 → each train job wants 2 GPUs and threads × 2 CPUs."""
    raw = yaml.safe_load((ROOT / "tests/workflow/params.yaml").read_text())
    raw["train"] |= {"processes": 2, "threads": 3, "batch_size": 16}
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(raw))
    copy = copy_repository(tmp_path / "repo", params=params)
    result = run(["snakemake", "-n", "--forceall", "--cores", "8"], copy, env=clean_env())
    blocks = (result.stdout + result.stderr).split("\nrule ")
    train = [b for b in blocks if b.startswith("train:")]
    segment = [b for b in blocks if b.startswith("segment:")]
    assert len(train) == 4 and len(segment) == 4
    for block in train:
        assert "threads: 6" in block and "gpu=2" in block, block
    for block in segment:
        assert "gpu=1" in block, block
