"""Copies of the repository for running the real workflow engines in isolation."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TINY_PARAMS = ROOT / "tests" / "workflow" / "params.yaml"


def run(
    args: list[str], cwd: Path, *, env: dict[str, str] | None = None, timeout: int = 900
) -> subprocess.CompletedProcess[str]:
    """Run a command; on failure raise with its whole output, for a readable test report."""
    result = subprocess.run(
        args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    if result.returncode != 0:
        raise AssertionError(
            f"{' '.join(args)} exited {result.returncode}\n--- stdout\n{result.stdout}"
            f"\n--- stderr\n{result.stderr}"
        )
    return result


def clean_env() -> dict[str, str]:
    """The environment without MLflow settings, so the default embedded store is used."""
    return {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}


def copy_repository(destination: Path, params: Path = TINY_PARAMS) -> Path:
    """Copy the repository's files into ``destination`` and make it a git repository of its own.

    Copied are the files git knows about (tracked, or untracked but not ignored, ``.dvc/config``
    among them); ``params`` becomes the copy's ``params.yaml``. DVC needs the git repository.
    """
    listed = (
        subprocess.run(
            ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            cwd=ROOT,
            capture_output=True,
            check=True,
        )
        .stdout.decode()
        .split("\0")
    )
    destination.mkdir(parents=True, exist_ok=True)
    for name in filter(None, listed):
        source = ROOT / name
        if source.is_file():
            target = destination / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
    shutil.copy2(params, destination / "params.yaml")
    env = {
        **clean_env(),
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@t",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@t",
    }
    run(["git", "init", "-q"], destination, env=env)
    run(["git", "add", "-A"], destination, env=env)
    run(["git", "commit", "-q", "-m", "copy"], destination, env=env)
    return destination
