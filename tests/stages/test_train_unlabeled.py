"""``sibnet train`` with unlabeled training images (SIBnet+, the entropy-minimisation reference
and the all-labeled upper bound) on the tiny phantom with extra unlabeled images."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import torch.multiprocessing as mp
from torch import nn

import sibnet.stages.train as train_stage
from sibnet.config import MethodParams, Params, ParamsError, validate_params
from sibnet.data.prepared import PreparedDataset
from sibnet.data.tensors import PreparedImages
from sibnet.distributed import Rank
from sibnet.engine import make_loader, train_epoch
from sibnet.losses import build_objective
from sibnet.models.classifier import build_classifier, load_checkpoint
from sibnet.reproducibility import seed_everything
from tests.conftest import Killed, count_train_epochs, train_into, untracked, with_changes
from tests.stages.test_train_distributed import (
    WEIGHT_ATOL,
    WEIGHT_RTOL,
    _free_port,
    _GradRecorder,
    _patch_norm,
    _per_image_norm,
    _spawned,
    assert_same_step_gradients,
    gradient_rank_main,
)

UNLABELED = 24
METHODS = {
    "baseline": {"objective": "cross_entropy"},
    "sibnet": {"objective": "sibnet", "lambda_cd": 0.012, "lambda_sc": 0.009, "unlabeled": "use"},
    "entropy": {"objective": "entropy_minimization", "unlabeled": "use"},
    "all_labeled": {"objective": "cross_entropy", "unlabeled": "oracle"},
}


@pytest.fixture(scope="module")
def params(tiny_params: Params) -> Params:
    raw = untracked(tiny_params).model_dump(mode="json")
    raw["prepare"]["phantom"]["unlabeled_images"] = UNLABELED
    raw["methods"] = METHODS
    raw["pipeline"]["methods"] = list(METHODS)
    raw["train"]["epochs"] = 3
    return validate_params(raw)


@pytest.fixture(scope="module")
def prepared(params: Params, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from sibnet.stages.prepare import prepare

    out = tmp_path_factory.mktemp("prepared") / "tiny_unlabeled"
    prepare(params, prepared=out)
    return out


def _epoch_sizes(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, int]]:
    """Patch ``train_epoch`` to record (labeled, unlabeled) images per epoch."""
    original, sizes = train_stage.train_epoch, []

    def recorded(model, loader, *args, unlabeled=None, **kwargs):
        sizes.append((len(loader.dataset), 0 if unlabeled is None else len(unlabeled.dataset)))
        return original(model, loader, *args, unlabeled=unlabeled, **kwargs)

    monkeypatch.setattr(train_stage, "train_epoch", recorded)
    return sizes


def test_each_usage_trains_on_its_images(
    params: Params,
    prepared: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    dataset = PreparedDataset.open(prepared)
    labeled = len(dataset.indices("train"))
    assert dataset.n_unlabeled == UNLABELED
    found = {}
    for method in METHODS:
        with monkeypatch.context() as patch, caplog.at_level(logging.INFO, "sibnet.stages.train"):
            sizes = _epoch_sizes(patch)
            caplog.clear()
            folder = train_into(params, prepared, tmp_path / method, method)
        found[method] = sizes[0]
        _, checkpoint = load_checkpoint(folder / "classifier.pt")
        record = checkpoint["extra"]["unlabeled"]
        assert record["unlabeled_images"] == UNLABELED
        assert record["unlabeled_usage"] == params.methods[method].unlabeled
        if method == "baseline":
            assert f"baseline ignores the {UNLABELED} unlabeled training images" in caplog.text
    assert found == {
        "baseline": (labeled, 0),
        "sibnet": (labeled, UNLABELED),
        "entropy": (labeled, UNLABELED),
        "all_labeled": (labeled + UNLABELED, 0),
    }
    history = pd.read_csv(tmp_path / "entropy" / "history.csv")
    assert (history["train_entropy"] > 0).all()
    _, plus = load_checkpoint(tmp_path / "sibnet" / "classifier.pt")
    assert plus["extra"]["unlabeled"]["unlabeled_batch_size"] == 8  # round(0.5 · 16)


def test_the_upper_bound_trains_with_the_withheld_labels(prepared: Path) -> None:
    dataset = PreparedDataset.open(prepared)
    view = PreparedImages.with_withheld(dataset)
    rows = dataset.unlabeled_indices()
    at = np.searchsorted(view.rows, rows)
    assert np.array_equal(view.rows[at], rows)
    assert np.array_equal(view.targets[at], dataset.withheld_labels(rows))
    assert (dataset.labels[rows] == -1).all()  # the manifest holds placeholders only
    assert (view.targets >= 0).all()


def test_poisoned_unlabeled_targets_leave_the_trained_model_unchanged(
    params: Params, prepared: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    original = PreparedImages.unlabeled.__func__

    def poisoned(cls, dataset):
        view = original(cls, dataset)
        view.targets = np.random.default_rng(0).integers(0, 2, view.targets.shape, np.int8)
        return view

    for method in ("sibnet", "entropy"):
        clean = train_into(params, prepared, tmp_path / f"{method}_clean", method)
        with monkeypatch.context() as patch:
            patch.setattr(PreparedImages, "unlabeled", classmethod(poisoned))
            dirty = train_into(params, prepared, tmp_path / f"{method}_dirty", method)
        assert (clean / "classifier.pt").read_bytes() == (dirty / "classifier.pt").read_bytes()
        assert (clean / "history.csv").read_bytes() == (dirty / "history.csv").read_bytes()


def test_killed_sibnet_plus_run_resumes_with_identical_outputs(
    params: Params, prepared: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # 2 workers: the unlabeled loader's persistent workers are restarted like the labeled one's
    params = with_changes(params, train={"num_workers": 2})
    whole = train_into(params, prepared, tmp_path / "whole", "sibnet")
    with monkeypatch.context() as patch:
        count_train_epochs(patch, fail_on_call=2)
        with pytest.raises(Killed):
            train_into(params, prepared, tmp_path / "killed", "sibnet")
    with monkeypatch.context() as patch:
        calls = count_train_epochs(patch)
        train_into(params, prepared, tmp_path / "killed", "sibnet")
    assert len(calls) == 2
    for name in ("classifier.pt", "history.csv"):
        assert (tmp_path / "killed" / name).read_bytes() == (whole / name).read_bytes()


def test_asking_for_unlabeled_images_on_a_dataset_without_fails_before_training(
    params: Params, prepared_tiny: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the params validate (their source has unlabeled images); the prepared dataset has none
    with monkeypatch.context() as patch:
        calls = count_train_epochs(patch)
        for method, message in (("sibnet", "has none"), ("all_labeled", "has none")):
            with pytest.raises(ParamsError, match=rf"methods.{method}.unlabeled = .*{message}"):
                train_into(params, prepared_tiny, tmp_path / method, method)
    assert calls == []
    assert not (tmp_path / "sibnet" / "classifier.pt").exists()


@pytest.fixture(scope="module")
def prepared_odd(params: Params, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny phantom with 27 unlabeled images (of which the gradient test takes 26)."""
    from sibnet.stages.prepare import prepare

    raw = params.model_dump(mode="json")
    raw["prepare"]["phantom"]["unlabeled_images"] = 27
    out = tmp_path_factory.mktemp("prepared") / "tiny_odd"
    prepare(validate_params(raw), prepared=out)
    return out


def _epoch_gradients(prepared: Path, method: dict, rank: Rank) -> dict:
    """One epoch of the real loop over 51 labeled images (batch 16: the last, 3, splits 2/1
    over two processes) and 26 unlabeled ones (batch 8: the last, 2, splits 1/1), with the
    parameters held fixed: every step's gradient ``(steps, P)``."""
    dataset = PreparedDataset.open(prepared)
    labeled = torch.utils.data.Subset(PreparedImages(dataset, "train"), range(51))
    spec = MethodParams.model_validate(method)
    seed_everything(0)
    model = _per_image_norm(build_classifier(spec.architecture, len(dataset.classes)))
    net = model if rank.world == 1 else nn.parallel.DistributedDataParallel(model)
    objective = build_objective(spec, dataset.task)
    optimizer = _GradRecorder(model.parameters())
    loader = make_loader(labeled, batch_size=16, shuffle=True, seed=0, shard=rank)
    extra = torch.utils.data.Subset(PreparedImages.unlabeled(dataset), range(26))
    unlabeled = make_loader(extra, batch_size=8, shuffle=True, seed=1, shard=rank)
    train_epoch(net, loader, objective, optimizer, unlabeled=unlabeled)
    return {"steps": torch.stack(optimizer.steps)}


@pytest.mark.parametrize("method", ["sibnet", "entropy"])
def test_every_distributed_step_with_unlabeled_images_has_the_global_gradient(
    prepared_odd: Path, tmp_path: Path, method: str
) -> None:
    """SIBnet+ (task over the labeled images, CD and SC over all) and entropy minimisation (the
    entropy over the unlabeled ones) over two processes: every step's averaged gradient is the
    single-process gradient of the same global batches, also at the last step, where the
    labeled and the unlabeled chunks are uneven in different proportions (each term weighted
    by its own images' share; one shared factor gives relative errors of 3e-3 to 1e-2 there)."""
    raw = METHODS[method]
    torch.set_num_threads(1)
    expected = _epoch_gradients(prepared_odd, raw, Rank())
    out = tmp_path / "found.pt"
    args = (_free_port(), str(prepared_odd), raw, str(out), _epoch_gradients)
    mp.spawn(gradient_rank_main, args=args, nprocs=2)
    found = torch.load(out, weights_only=False)
    assert_same_step_gradients(found["steps"], expected["steps"], method)


def test_two_processes_train_the_single_process_sibnet_plus_model(
    params: Params, prepared: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The train stage as users run it (torchrun's environment, the unlabeled loader sharded),
    with a per-image normalisation: the history and weights of one process."""
    with monkeypatch.context() as patch:
        _patch_norm(patch)
        one = train_into(params, prepared, tmp_path / "one", "sibnet")
    two = _spawned(with_changes(params, train={"processes": 2}), prepared, tmp_path / "two", True)
    expected, found = pd.read_csv(one / "history.csv"), pd.read_csv(two / "history.csv")
    np.testing.assert_allclose(found.to_numpy(), expected.to_numpy(), rtol=1e-5)
    model_one = torch.load(one / "classifier.pt", weights_only=True)["state_dict"]
    model_two = torch.load(two / "classifier.pt", weights_only=True)["state_dict"]
    for name, value in model_one.items():
        torch.testing.assert_close(model_two[name], value, rtol=WEIGHT_RTOL, atol=WEIGHT_ATOL)


def test_prepare_and_train_log_the_unlabeled_images_to_mlflow(
    params: Params, tmp_path: Path, mlflow_uri: str
) -> None:
    from mlflow.tracking import MlflowClient

    from sibnet.stages.prepare import prepare

    tracked = with_changes(
        params, tracking={"enabled": True, "experiment": "t-unlabeled"}, train={"epochs": 1}
    )
    prepare(tracked, prepared=tmp_path / "prepared")
    train_into(tracked, tmp_path / "prepared", tmp_path / "plus", "sibnet")
    client = MlflowClient(tracking_uri=mlflow_uri)
    runs = client.search_runs([client.get_experiment_by_name("t-unlabeled").experiment_id])
    by_stage = {run.data.tags["sibnet.stage"]: run for run in runs}
    assert by_stage["prepare"].data.metrics["unlabeled_images"] == UNLABELED
    assert by_stage["prepare"].data.metrics["withheld_labels"] == UNLABELED
    logged = by_stage["train"].data.params
    assert logged["unlabeled_usage"] == "use" and logged["unlabeled_images_used"] == str(UNLABELED)
    assert logged["method.unlabeled"] == "use" and logged["unlabeled_batch_size"] == "8"
