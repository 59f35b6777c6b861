"""Shared fixtures: the tiny configuration, an isolated MLflow store, a prepared tiny dataset."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sibnet.config import Params, load_params

ROOT = Path(__file__).resolve().parents[1]
TINY_PARAMS = ROOT / "tests" / "workflow" / "params.yaml"


@pytest.fixture(scope="session")
def mlflow_uri(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A SQLite MLflow store of the test session's own (never the repository's mlflow.db)."""
    folder = tmp_path_factory.mktemp("mlflow")
    return f"sqlite:///{folder / 'mlflow.db'}"


@pytest.fixture(autouse=True)
def _isolated_mlflow(
    mlflow_uri: str, monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory
) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_uri)


class Killed(RuntimeError):
    """Stands in for the job being killed."""


def count_train_epochs(
    monkeypatch: pytest.MonkeyPatch, fail_on_call: int | None = None
) -> list[int]:
    """Patch ``sibnet.stages.train.train_epoch`` to count its calls (and raise
    :class:`Killed` on call ``fail_on_call``). ``monkeypatch`` may be a ``pytest.MonkeyPatch()``
    made in a spawned process."""
    import sibnet.stages.train as train_stage

    original = train_stage.train_epoch
    calls: list[int] = []

    def patched(*args: Any, **kwargs: Any) -> dict[str, float]:
        calls.append(len(calls) + 1)
        if fail_on_call is not None and len(calls) == fail_on_call:
            raise Killed("simulated kill")
        return original(*args, **kwargs)

    monkeypatch.setattr(train_stage, "train_epoch", patched)
    return calls


@pytest.fixture(scope="session")
def tiny_params() -> Params:
    """The tiny configuration of tests/workflow/params.yaml."""
    return load_params(TINY_PARAMS)


def with_changes(params: Params, **sections: dict) -> Params:
    """A copy of ``params`` with some keys of some sections replaced (validated again)."""
    from sibnet.config import validate_params

    raw = params.model_dump(mode="json")
    for section, changes in sections.items():
        raw[section] = {**raw[section], **changes}
    return validate_params(raw)


def untracked(params: Params) -> Params:
    """``params`` with MLflow tracking off."""
    return with_changes(params, tracking={"enabled": False})


@pytest.fixture(scope="session")
def prepared_tiny(tiny_params: Params, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny phantom, prepared once per session (tracking off). Treat it as read-only."""
    from sibnet.stages.prepare import prepare

    params = untracked(tiny_params)
    out = tmp_path_factory.mktemp("prepared") / "tiny"
    prepare(params, prepared=out)
    return out


def train_into(params: Params, prepared: Path, folder: Path, method: str, seed: int = 0) -> Path:
    """Train ``method`` with ``seed`` into ``folder`` (``classifier.pt``, ``history.csv``)."""
    from sibnet.stages.train import train

    folder.mkdir(parents=True, exist_ok=True)
    train(
        params,
        prepared=prepared,
        checkpoint=folder / "classifier.pt",
        history=folder / "history.csv",
        method=method,
        seed=seed,
    )
    return folder


@pytest.fixture(scope="session")
def trained_tiny(
    tiny_params: Params, prepared_tiny: Path, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """A classifier trained once per session on the tiny phantom (tracking off)."""
    folder = tmp_path_factory.mktemp("model")
    return train_into(untracked(tiny_params), prepared_tiny, folder, "baseline") / "classifier.pt"


@contextlib.contextmanager
def captured_logs(name: str) -> Iterator[list[logging.LogRecord]]:
    """Every record logged to logger ``name`` (any level) inside the block, for fixtures wider
    than a test (pytest's ``caplog`` is per test)."""
    records: list[logging.LogRecord] = []
    handler = logging.Handler(logging.DEBUG)
    handler.emit = records.append  # type: ignore[method-assign]
    logger = logging.getLogger(name)
    level = logger.level
    logger.setLevel(logging.DEBUG)
    logger.addHandler(handler)
    try:
        yield records
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def rewritten(
    source: Path,
    dest: Path,
    *,
    lesion_masks: str = "keep",
    organ_masks: bool = True,
    organs: list[str] | None = None,
) -> Path:
    """A copy at ``dest`` of the prepared dataset ``source`` with its masks changed, for stages
    on datasets that lack them.

    Args:
        lesion_masks: ``keep``; ``empty`` (annotated, every mask empty); ``none`` (the dataset
            stores none).
        organ_masks: keep the organ masks; ``False``: no image is annotated.
        organs: the organ names ``dataset.json`` gives (``None``: the source's).
    """
    import numpy as np

    from sibnet.data.prepared import PreparedDataset, PreparedWriter

    dataset = PreparedDataset.open(source)
    manifest = dataset.manifest
    rows = np.arange(len(dataset))
    writer = PreparedWriter(
        root=dest,
        name=dataset.meta["name"],
        task=dataset.task,
        classes=dataset.classes,
        organs=dataset.organs if organs is None else organs,
        image_size=dataset.image_size,
        shard_size=len(rows),
        lesion_masks=lesion_masks != "none",
    )
    lesions = dataset.lesion_masks(rows)
    writer.add(
        images=dataset.images(rows),
        labels=dataset.labels,
        ids=manifest["id"].tolist(),
        splits=manifest["split"].tolist(),
        patient_ids=manifest["patient_id"].tolist(),
        sources=manifest["source"].tolist(),
        lesion_masks={"keep": lesions, "empty": np.zeros_like(lesions), "none": None}[lesion_masks],
        organ_masks=dataset.organ_masks(rows) if organ_masks else None,
    )
    writer.close()
    return dest
