"""Finished runs of the tiny pipeline, shared by the test modules that inspect them.

Session-scoped: one `snakemake` run and one `dvc repro` run serve every module (a run takes
minutes). Tests must not change what these copies hold; a test that does copies them first.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.workflow.repo import clean_env, copy_repository, run


@pytest.fixture(scope="session")
def snakemake_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    copy = copy_repository(tmp_path_factory.mktemp("snakemake") / "repo")
    run(["snakemake", "--cores", "all"], copy, env=clean_env())
    return copy


@pytest.fixture(scope="session")
def dvc_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    copy = copy_repository(tmp_path_factory.mktemp("dvc") / "repo")
    run(["dvc", "repro"], copy, env=clean_env())
    return copy
