"""The shipped tiny configuration gives byte-identical outputs before and after a reshaping.

:data:`BEFORE` is the last revision whose outputs the code must reproduce exactly: the one
before the extension points were reshaped (objectives, dataset sources, stages and report
sections that register themselves). Both revisions run the whole DAG with Snakemake on their own
copy of ``tests/workflow/params.yaml`` (the same configuration, each written in its revision's
schema), side by side on this machine, and every output is compared byte for byte: prepared
data, checkpoints, histories, scores, segmenters and the report. The lineage records are not
compared: they name the code, which differs by design.

A change that alters outputs on purpose moves :data:`BEFORE` to its own revision and says so in
its commit message.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from benchmarks import export_revision

from tests.workflow.repo import ROOT, clean_env, init_repository, pipeline_outputs, run

pytestmark = pytest.mark.slow

BEFORE = "3b808f13d0d8605169c1e5daa9ef2fdaedcb41f8"
"""The revision the outputs are compared with (see the module docstring)."""


def _has_revision(revision: str) -> bool:
    found = subprocess.run(
        ["git", "cat-file", "-e", f"{revision}^{{commit}}"], cwd=ROOT, capture_output=True
    )
    return found.returncode == 0


@pytest.fixture(scope="module")
def before_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not _has_revision(BEFORE):
        pytest.skip(
            f"revision {BEFORE[:12]} is not in this clone (a shallow clone?); "
            "`git fetch --unshallow` and rerun to compare outputs with it"
        )
    copy = export_revision(BEFORE, tmp_path_factory.mktemp("before") / "repo")
    (copy / "params.yaml").write_bytes((copy / "tests/workflow/params.yaml").read_bytes())
    init_repository(copy)
    env = {**clean_env(), "PYTHONPATH": str(copy / "src")}  # that revision's package, not ours
    run(["snakemake", "--cores", "all"], copy, env=env)
    return copy


def test_every_output_is_byte_identical_to_the_revision_before(
    snakemake_run: Path, before_run: Path
) -> None:
    now = pipeline_outputs(snakemake_run)
    then = pipeline_outputs(before_run)
    assert [p.relative_to(snakemake_run) for p in now] == [p.relative_to(before_run) for p in then]
    changed = [
        str(path.relative_to(snakemake_run))
        for path, old in zip(now, then, strict=True)
        if path.read_bytes() != old.read_bytes()
    ]
    assert not changed, f"outputs differ from revision {BEFORE[:12]}: {changed}"
