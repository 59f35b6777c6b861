"""Copies of the repository for running the real workflow engines in isolation."""

from __future__ import annotations

import os
import shutil
import subprocess
import sysconfig
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TINY_PARAMS = ROOT / "tests" / "workflow" / "params.yaml"
RUNS = [("baseline", 0), ("baseline", 1), ("sibnet", 0), ("sibnet", 1)]
"""The method × seed runs of :data:`TINY_PARAMS`."""


def run(
    args: list[str], cwd: Path, *, env: dict[str, str] | None = None, timeout: int = 900
) -> subprocess.CompletedProcess[str]:
    """Run a command (``env`` defaults to :func:`script_env` of this process's environment);
    on failure raise with its whole output, for a readable test report."""
    result = subprocess.run(
        args,
        cwd=cwd,
        env=script_env(os.environ) if env is None else env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if result.returncode != 0:
        raise AssertionError(
            f"{' '.join(args)} exited {result.returncode}\n--- stdout\n{result.stdout}"
            f"\n--- stderr\n{result.stderr}"
        )
    return result


def script_env(env: dict[str, str] | os._Environ[str]) -> dict[str, str]:
    """``env`` with this interpreter's scripts folder first on ``PATH``, so that ``sibnet``,
    ``snakemake`` and ``dvc`` are the ones installed beside the Python running the tests, also
    when its virtual environment is not activated (``/path/to/venv/bin/python -m pytest``)."""
    scripts = sysconfig.get_path("scripts")
    return {**env, "PATH": os.pathsep.join([scripts, env.get("PATH", os.defpath)])}


def clean_env() -> dict[str, str]:
    """The environment without MLflow settings (so the default embedded store is used), with
    :func:`script_env`'s ``PATH``."""
    return script_env({k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")})


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
    return init_repository(destination)


def init_repository(destination: Path) -> Path:
    """Make ``destination`` a git repository of its own, every file committed (DVC needs one)."""
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


def dry_run_rules(copy: Path, env: dict[str, str] | None = None) -> set[str]:
    """The rules ``snakemake -n`` would run in ``copy`` (``all`` included), in ``env``
    (default: :func:`clean_env`)."""
    result = run(
        ["snakemake", "-n", "--cores", "all"], copy, env=clean_env() if env is None else env
    )
    lines = (result.stdout + result.stderr).splitlines()
    return {line.split()[1].rstrip(":") for line in lines if line.startswith("rule ")}


def pipeline_outputs(root: Path) -> list[Path]:
    """Every output file of a finished tiny run in ``root`` (:data:`TINY_PARAMS`), sorted by
    stage: the prepared dataset's index, each run's models and results, the report."""
    files = [root / "data/prepared/tiny/manifest.parquet", root / "data/prepared/tiny/dataset.json"]
    for method, seed in RUNS:
        files += [
            root / f"models/tiny/{method}/seed{seed}/classifier.pt",
            root / f"models/tiny/{method}/seed{seed}/history.csv",
            root / f"results/tiny/{method}/seed{seed}/metrics.json",
            root / f"results/tiny/{method}/seed{seed}/predictions.parquet",
            root / f"results/tiny/{method}/seed{seed}/robustness.parquet",
            root / f"results/tiny/{method}/seed{seed}/robustness_predictions.parquet",
            root / f"results/tiny/{method}/seed{seed}/saliency.parquet",
            root / f"results/tiny/{method}/seed{seed}/saliency.json",
            root / f"results/tiny/{method}/seed{seed}/saliency_examples.npz",
            root / f"results/tiny/{method}/seed{seed}/segmentation.parquet",
            root / f"results/tiny/{method}/seed{seed}/segmentation.json",
            root / f"results/tiny/{method}/seed{seed}/segmentation_examples.npz",
            *sorted((root / f"models/tiny/{method}/seed{seed}/segmenters").glob("*.pt")),
        ]
    files += [root / "results/metrics.json", *sorted((root / "results/plots").glob("*.csv"))]
    files += sorted(p for p in (root / "results/report").iterdir() if not p.name.startswith("."))
    return files
