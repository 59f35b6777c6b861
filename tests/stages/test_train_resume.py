"""Resumable training: a run killed after epoch k continues at k + 1 with identical outputs."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch

from sibnet.config import Params
from sibnet.stages.train import resume_path
from tests.conftest import Killed, count_train_epochs, train_into, untracked, with_changes

EPOCHS = 3
KILLED_AFTER = 1  # the interrupted run finishes epoch 1, then dies at the start of epoch 2


@pytest.fixture(scope="module")
def resume_params(tiny_params: Params) -> Params:
    return with_changes(untracked(tiny_params), train={"epochs": EPOCHS})


@pytest.mark.parametrize(("method", "workers"), [("baseline", 0), ("sibnet", 0), ("baseline", 2)])
def test_killed_run_resumes_with_identical_outputs(
    resume_params: Params,
    prepared_tiny: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    method: str,
    workers: int,
) -> None:
    # workers > 0: persistent DataLoader workers draw their base seed in the first epoch only
    resume_params = with_changes(resume_params, train={"num_workers": workers})
    whole = train_into(resume_params, prepared_tiny, tmp_path / "whole", method)
    assert not resume_path(whole / "classifier.pt").exists()

    with monkeypatch.context() as patch:
        calls = count_train_epochs(patch, fail_on_call=KILLED_AFTER + 1)
        with pytest.raises(Killed):
            train_into(resume_params, prepared_tiny, tmp_path / "killed", method)
    assert len(calls) == KILLED_AFTER + 1
    killed = tmp_path / "killed"
    assert not (killed / "classifier.pt").exists() and not (killed / "history.csv").exists()
    saved = torch.load(resume_path(killed / "classifier.pt"), weights_only=True)
    assert saved["epoch"] == KILLED_AFTER

    with monkeypatch.context() as patch, caplog.at_level(logging.INFO, "sibnet.stages.train"):
        calls = count_train_epochs(patch)
        train_into(resume_params, prepared_tiny, killed, method)
    assert len(calls) == EPOCHS - KILLED_AFTER  # epochs 1..k were not redone
    assert f"epoch {KILLED_AFTER + 1} next" in caplog.text
    assert not resume_path(killed / "classifier.pt").exists()
    assert (killed / "classifier.pt").read_bytes() == (whole / "classifier.pt").read_bytes()
    assert (killed / "history.csv").read_bytes() == (whole / "history.csv").read_bytes()


def test_resume_file_of_other_params_is_ignored(
    resume_params: Params,
    prepared_tiny: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    other = with_changes(resume_params, train={"learning_rate": 0.002})
    with monkeypatch.context() as patch:
        count_train_epochs(patch, fail_on_call=2)
        with pytest.raises(Killed):
            train_into(other, prepared_tiny, tmp_path / "run", "baseline")
    assert resume_path(tmp_path / "run" / "classifier.pt").exists()

    with monkeypatch.context() as patch, caplog.at_level(logging.INFO, "sibnet.stages.train"):
        calls = count_train_epochs(patch)
        train_into(resume_params, prepared_tiny, tmp_path / "run", "baseline")
    assert len(calls) == EPOCHS  # started from epoch 1
    assert "belongs to another job (params_sha256" in caplog.text
    assert not resume_path(tmp_path / "run" / "classifier.pt").exists()
    train_into(resume_params, prepared_tiny, tmp_path / "fresh", "baseline")
    for name in ("classifier.pt", "history.csv"):
        assert (tmp_path / "run" / name).read_bytes() == (tmp_path / "fresh" / name).read_bytes()


def test_unreadable_resume_file_is_ignored(
    resume_params: Params, prepared_tiny: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    params = with_changes(resume_params, train={"epochs": 1})
    resume = resume_path(tmp_path / "classifier.pt")
    resume.write_bytes(b"not a checkpoint")
    with caplog.at_level(logging.WARNING, "sibnet.stages.train"):
        train_into(params, prepared_tiny, tmp_path, "baseline")
    assert "unreadable" in caplog.text
    assert (tmp_path / "classifier.pt").exists() and not resume.exists()
