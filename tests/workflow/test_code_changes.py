"""A code edit re-runs only the stages that can run the edited module, under both engines, and
every module a stage really loads is among its declared code dependencies (``Stage.code``)."""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
from pathlib import Path

import pytest

from sibnet.dag import STAGES, command, expand
from tests.workflow.repo import clean_env, dry_run_rules, run

pytestmark = pytest.mark.slow

PER_METHOD = ("train", "evaluate", "robustness", "saliency", "segment")


def _edited_copy(finished: Path, tmp_path: Path, module: str, old: str, new: str) -> Path:
    """A copy of a finished run whose ``src/sibnet/<module>`` has ``old`` replaced by ``new``
    (modification times kept, so only the edited file is newer than the outputs)."""
    copy = tmp_path / "repo"
    shutil.copytree(finished, copy, symlinks=True)
    path = copy / "src/sibnet" / module
    text = path.read_text()
    assert old in text, (module, old)
    path.write_text(text.replace(old, new, 1))
    return copy


def test_snakemake_reruns_only_the_report_after_a_report_figure_edit(
    snakemake_run: Path, tmp_path: Path
) -> None:
    copy = _edited_copy(snakemake_run, tmp_path, "plots/report.py", "\n", "\n# edited\n")
    assert dry_run_rules(copy) == {"report", "audit", "all"}


def test_snakemake_reruns_train_and_everything_after_it_after_a_loss_edit(
    snakemake_run: Path, tmp_path: Path
) -> None:
    copy = _edited_copy(snakemake_run, tmp_path, "losses/sibnet.py", "\n", "\n# edited\n")
    assert dry_run_rules(copy) == {*PER_METHOD, "report", "audit", "all"}


def _dvc_env(copy: Path) -> dict[str, str]:
    """Run the copy's own code (its edited ``src``), not the installed package's."""
    env = clean_env()
    return {**env, "PYTHONPATH": os.pathsep.join([str(copy / "src"), env.get("PYTHONPATH", "")])}


def test_dvc_reruns_only_the_report_and_the_audit_after_a_report_figure_edit(
    dvc_run: Path, tmp_path: Path
) -> None:
    """A changed axis label: the report's figures change, so the audit re-runs too."""
    copy = _edited_copy(
        dvc_run, tmp_path, "plots/report.py", 'ylabel="test macro AUC"', 'ylabel="test AUC"'
    )
    result = run(["dvc", "repro"], copy, env=_dvc_env(copy))
    ran = set(re.findall(r"Running stage '([^']+)'", result.stdout + result.stderr))
    assert ran == {"report", "audit"}, result.stdout[-3000:]


def test_dvc_sees_a_loss_edit_as_a_change_of_the_train_stages_only(
    dvc_run: Path, tmp_path: Path
) -> None:
    """Only train runs the losses. (What runs after train then depends on whether its
    outputs changed: DVC compares contents.)"""
    copy = _edited_copy(dvc_run, tmp_path, "losses/sibnet.py", "\n", "\n# edited\n")
    status = json.loads(run(["dvc", "status", "--json"], copy, env=clean_env()).stdout)
    assert status and {name.split("@")[0] for name in status} == {"train"}, status
    changed = {
        dep for entries in status.values() for e in entries for dep in e.get("changed deps", {})
    }
    assert changed == {"src/sibnet/losses/sibnet.py"}, status


RECORD = (
    "import json, sys\n"
    "from sibnet.cli import main\n"
    "code = main(sys.argv[2:])\n"
    "loaded = sorted(m for m in sys.modules if m == 'sibnet' or m.startswith('sibnet.'))\n"
    "open(sys.argv[1], 'w').write(json.dumps(loaded))\n"
    "sys.exit(code)\n"
)
"""Runs the ``sibnet`` command, then writes the package modules the process loaded."""


def test_every_module_a_stage_loads_is_in_its_code_dependencies(
    snakemake_run: Path, tmp_path: Path
) -> None:
    """Each stage runs for real on the finished tiny run's inputs (outputs to a scratch folder),
    and the package modules it loaded, lazy and importlib imports included, are all in
    ``Stage.code``."""
    params = snakemake_run / "params.yaml"
    values = {"dataset": "tiny", "method": "baseline", "seed": "0"}
    for name, spec in STAGES.items():
        work = tmp_path / name
        if name == "audit":  # it reads the job records, relative to the finished run's root
            shutil.copytree(snakemake_run, work, symlinks=True)
            inputs = {k: expand(t, **values) for k, t in spec.inputs.items()}
        else:
            work.mkdir()
            inputs = {k: str(snakemake_run / expand(t, **values)) for k, t in spec.inputs.items()}
        outputs = {k: str(work / "out" / expand(t, **values)) for k, t in spec.outputs.items()}
        line = command(spec, inputs | outputs, params_file=str(params), method="baseline", seed="0")
        loaded_file = work / "loaded.json"
        run(
            [sys.executable, "-c", RECORD, str(loaded_file), *line.split()[1:]],
            work,
            env=clean_env(),
        )
        loaded = {m.replace(".", "/") for m in json.loads(loaded_file.read_text())}
        declared = {
            path.removeprefix("src/").removesuffix(".py").removesuffix("/__init__")
            for path in spec.code
        }
        assert loaded <= declared, f"{name} loaded undeclared modules: {sorted(loaded - declared)}"
        assert f"sibnet/stages/{name}" in loaded
