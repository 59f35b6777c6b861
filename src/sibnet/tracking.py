"""MLflow tracking for every stage run: params, per-epoch metrics, final metrics, artifacts.

The tracking store is ``MLFLOW_TRACKING_URI`` when that is set (a tracking server such as
``http://mlflow.example.org:5000``, or any store MLflow accepts), and otherwise an embedded
SQLite store ``mlflow.db`` in the working directory (the repository root under Snakemake and
DVC), with artifacts under ``mlartifacts/``. Any SQLite store keeps its artifacts in
``mlartifacts/`` beside the database file. Browse it with
``mlflow ui --backend-store-uri sqlite:///mlflow.db``.

Every run is tagged with ``sibnet.stage``, ``sibnet.dataset``, ``sibnet.method``,
``sibnet.seed``, ``sibnet.git_commit`` and ``sibnet.git_dirty``. ``tracking.enabled: false``
in params turns tracking off (a :class:`Tracker` then does nothing).
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sibnet.config import Params

__all__ = ["DEFAULT_TRACKING_URI", "Tracker", "flatten", "git_state", "start_run", "tracking_uri"]

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
DEFAULT_ARTIFACT_ROOT = "mlartifacts"


def tracking_uri() -> str:
    """``MLFLOW_TRACKING_URI`` if set, else the embedded SQLite store in the working directory."""
    return os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI


def git_state(cwd: str | Path = ".") -> dict[str, str]:
    """The code version: ``{"commit": <sha or "unknown">, "dirty": "true"|"false"|"unknown"}``."""

    def git(*args: str) -> str | None:
        try:
            result = subprocess.run(
                ["git", *args], cwd=cwd, capture_output=True, text=True, check=True, timeout=30
            )
        except (OSError, subprocess.SubprocessError):
            return None
        return result.stdout.strip()

    commit = git("rev-parse", "HEAD")
    if commit is None:
        return {"commit": "unknown", "dirty": "unknown"}
    status = git("status", "--porcelain", "--untracked-files=no")
    return {"commit": commit, "dirty": "unknown" if status is None else str(bool(status)).lower()}


def flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` → ``{"a.b": 1}``; lists are kept as their string form."""
    flat: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


class Tracker:
    """A thin handle on the active MLflow run; every method is a no-op when tracking is off."""

    def __init__(self, mlflow_module: Any | None) -> None:
        self._mlflow = mlflow_module

    @property
    def run_id(self) -> str | None:
        """The MLflow run id, or ``None`` when tracking is off."""
        if self._mlflow is None:
            return None
        return self._mlflow.active_run().info.run_id

    def log_params(self, params: Mapping[str, Any]) -> None:
        """Log (nested) params, flattened to dotted keys."""
        if self._mlflow is not None:
            self._mlflow.log_params({k: str(v) for k, v in flatten(params).items()})

    def log_metrics(self, metrics: Mapping[str, Any], step: int | None = None) -> None:
        """Log the finite numeric entries of a (nested) metrics mapping."""
        if self._mlflow is None:
            return
        numeric = {
            key: float(value)
            for key, value in flatten(metrics).items()
            if isinstance(value, int | float)
            and not isinstance(value, bool)
            and value == value
            and abs(value) != float("inf")
        }
        if numeric:
            self._mlflow.log_metrics(numeric, step=step)

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        """Copy a file into the run's artifacts."""
        if self._mlflow is not None:
            self._mlflow.log_artifact(str(path), artifact_path=artifact_path)


@contextlib.contextmanager
def start_run(
    params: Params, *, stage: str, method: str | None = None, seed: int | None = None
) -> Iterator[Tracker]:
    """Open an MLflow run for one stage execution and close it (FAILED on an exception).

    Args:
        params: validated params; ``tracking.enabled: false`` yields a no-op tracker,
            ``tracking.experiment`` names the MLflow experiment (created on first use) and
            ``prepare.dataset`` the dataset tag.
        stage, method, seed: recorded as tags and in the run name.
    """
    if not params.tracking.enabled:
        yield Tracker(None)
        return
    experiment = params.tracking.experiment
    dataset = params.prepare.dataset
    import mlflow

    uri = tracking_uri()
    mlflow.set_tracking_uri(uri)
    if mlflow.get_experiment_by_name(experiment) is None:
        location = None
        if uri.startswith("sqlite:///"):  # artifacts beside the database, not in ./mlruns
            database = Path(uri.removeprefix("sqlite:///"))
            location = (database.parent / DEFAULT_ARTIFACT_ROOT).resolve().as_uri()
        with contextlib.suppress(mlflow.exceptions.MlflowException):  # lost a creation race
            mlflow.create_experiment(experiment, artifact_location=location)
    mlflow.set_experiment(experiment)
    git = git_state()
    tags = {
        "sibnet.stage": stage,
        "sibnet.dataset": dataset,
        "sibnet.git_commit": git["commit"],
        "sibnet.git_dirty": git["dirty"],
    }
    if method is not None:
        tags["sibnet.method"] = method
    if seed is not None:
        tags["sibnet.seed"] = str(seed)
    name = "-".join(str(part) for part in (stage, dataset, method, seed) if part is not None)
    with mlflow.start_run(run_name=name, tags=tags):
        yield Tracker(mlflow)
