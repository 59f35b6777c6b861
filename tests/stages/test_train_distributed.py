"""Data-parallel training (``train.processes: 2``) on the CPU with the gloo backend.

Three comparisons with a single-process run of the same params:

- **gradients** — one epoch of the real loop (``train_epoch``, SIBnet's objective) with the
  parameters held fixed and batch norm swapped for a per-image normalisation: every step's
  averaged gradient must be the single-process gradient of the same global batch within
  ``GRADIENT_RTOL`` (ResNet's closed-form Grad-CAM and DenseNet's autograd one);
- **whole training** — with the same per-image normalisation (``GroupNorm(1, C)``), two
  processes must train the single process's ResNet: every history
  value within ``EXACT_RTOL`` and every weight within ``WEIGHT_ATOL`` (float rounding only:
  convolutions over 8 images instead of 16, gradients summed in another order);
- **as users run it** — ``sibnet train`` under ``torchrun`` with batch norm, whose statistics
  are per process: the history within ``BN_TOLERANCE`` (absolute), measured below.

The last two check that only rank 0 writes (checkpoint, history, resume file, MLflow,
lineage). DenseNet's whole-training weights are not compared: Adam turns rounding-level
differences of near-zero gradients into steps of ±lr on single weights (measured 1.9e-3 after
four steps, 4.5e-5 of the weights' norm), so its gradients are compared instead.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
import torch.multiprocessing as mp
from torch import nn

import sibnet.stages.train as train_stage
from sibnet.config import MethodParams, Params, validate_params
from sibnet.data.prepared import PreparedDataset
from sibnet.data.tensors import PreparedImages
from sibnet.distributed import Rank, ShardedBatchSampler, process_group
from sibnet.engine import make_loader, train_epoch
from sibnet.launch import launch_command
from sibnet.losses import build_objective
from sibnet.models.classifier import build_classifier, load_checkpoint
from sibnet.reproducibility import seed_everything
from tests.conftest import count_train_epochs, train_into, untracked, with_changes

# Measured 2026-11-26 (2 gloo processes against 1, tiny phantom, 3 epochs, method sibnet):
# per-image normalisation: history within 7.2e-7 relative, weights within 1.1e-5 absolute
# (7.6e-5 on one of 73,728 layer4 weights once SE blocks are 8 wide: Adam's ±lr steps on
# near-zero gradients, as for DenseNet below);
# batch norm: largest differences 0.035 train loss, 0.020 task loss, 0.018 CD, 0.0027
# validation loss, 0.050 validation macro AUC (19 images). The bounds leave about 2x room.
EXACT_RTOL = 1e-5  # history (written with 6 decimals)
# ‖g₂ − g₁‖ / ‖g₁‖ per step, measured 2026-11-26: resnet10_small 7e-7 – 1.1e-6 and 8.6e-6 at
# the uneven last batch; densenet121 3.7e-7 – 6.8e-7. A wrong loss weighting would give > 1e-1.
GRADIENT_RTOL = 1e-4
WEIGHT_RTOL, WEIGHT_ATOL = 1e-4, 2e-4
BN_TOLERANCE = {
    "train_loss": 0.07,
    "train_task": 0.04,
    "train_cd": 0.04,
    "val_loss": 0.01,
    "val_auc": 0.1,
}
EPOCHS = 3
WRITERS = ("save_checkpoint", "_write_resume", "start_run", "atomic_file")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _torchrun_env(local_rank: int, world: int, port: int) -> None:
    """The environment torchrun gives each process (one node, rendezvous on ``port``)."""
    os.environ.update(
        RANK=str(local_rank),
        LOCAL_RANK=str(local_rank),
        WORLD_SIZE=str(world),
        LOCAL_WORLD_SIZE=str(world),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
    )


def _per_image_norm(model: nn.Module) -> nn.Module:
    """``model`` with every BatchNorm2d replaced by GroupNorm(1, C) (batch-independent)."""
    for name, child in model.named_children():
        if isinstance(child, nn.BatchNorm2d):
            setattr(model, name, nn.GroupNorm(1, child.num_features))
        else:
            _per_image_norm(child)
    return model


def _patch_norm(patch: Any) -> None:
    build = train_stage.build_classifier
    patch.setattr(train_stage, "build_classifier", lambda *a, **k: _per_image_norm(build(*a, **k)))


def _rank_main(
    local_rank: int, world: int, port: int, raw: dict, folder: str, norm: bool, kill_at: int
) -> None:
    """One spawned training process: torchrun's environment, then ``train``; records the
    output-writing calls, then one ``train_epoch`` per epoch it ran, in ``calls-<rank>.json``.
    ``kill_at > 0``: every process dies when it starts its ``kill_at``-th epoch."""
    _torchrun_env(local_rank, world, port)
    patch = pytest.MonkeyPatch()  # this process ends with the run: never undone
    if norm:
        _patch_norm(patch)
    epochs = count_train_epochs(patch, kill_at or None)
    calls: list[str] = []
    for name in WRITERS:
        original = getattr(train_stage, name)

        def recorded(*args: Any, _name: str = name, _original: Any = original, **kwargs: Any):
            calls.append(_name)
            return _original(*args, **kwargs)

        patch.setattr(train_stage, name, recorded)
    out = Path(folder)
    train_stage.train(
        validate_params(raw),
        prepared=out / "prepared",
        checkpoint=out / "classifier.pt",
        history=out / "history.csv",
        method="sibnet",
        seed=0,
    )
    (out / f"calls-{local_rank}.json").write_text(json.dumps(calls + ["train_epoch"] * len(epochs)))


def _spawned(
    params: Params, prepared: Path, folder: Path, norm: bool = False, kill_at: int = 0
) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    if not (folder / "prepared").exists():
        (folder / "prepared").symlink_to(prepared)
    raw = params.model_dump(mode="json")
    args = (2, _free_port(), raw, str(folder), norm, kill_at)
    mp.spawn(_rank_main, args=args, nprocs=2, join=True)
    return folder


def _calls(folder: Path, rank: int) -> list[str]:
    return json.loads((folder / f"calls-{rank}.json").read_text())


def _single(params: Params, prepared: Path, folder: Path) -> Path:
    return train_into(params, prepared, folder, "sibnet")


@pytest.fixture(scope="module")
def ddp_params(tiny_params: Params) -> Params:
    return with_changes(untracked(tiny_params), train={"epochs": EPOCHS})


class _GradRecorder(torch.optim.Optimizer):
    """An optimiser that changes nothing and keeps every step's gradients, flattened."""

    def __init__(self, parameters: Any) -> None:
        super().__init__(parameters, {})
        self.steps: list[torch.Tensor] = []

    def step(self, closure: Any = None) -> None:
        grads = [p.grad.flatten() for group in self.param_groups for p in group["params"]]
        self.steps.append(torch.cat(grads).clone())


def _epoch_gradients(prepared: Path, method: dict, rank: Rank) -> dict[str, Any]:
    """One epoch of the real training loop over 51 tiny-phantom images (global batch 16: the
    last batch of 3 splits 2/1 over two processes) with parameters held fixed: each step's
    gradient (``(steps, P)``), the epoch's reported terms and the SIBnet term scales."""
    dataset = PreparedDataset.open(prepared)
    images = torch.utils.data.Subset(PreparedImages(dataset, "train"), range(51))
    spec = MethodParams.model_validate(method)
    seed_everything(0)
    model = _per_image_norm(
        build_classifier(spec.architecture, len(dataset.classes), attention=spec.attention)
    )
    net = model if rank.world == 1 else nn.parallel.DistributedDataParallel(model)
    objective = build_objective(spec, dataset.task)
    optimizer = _GradRecorder(model.parameters())
    loader = make_loader(images, batch_size=16, shuffle=True, seed=0, shard=rank)
    terms = train_epoch(net, loader, objective, optimizer)
    return {"steps": torch.stack(optimizer.steps), "terms": terms, "scales": objective.scales()}


def assert_same_step_gradients(found: torch.Tensor, expected: torch.Tensor, what: str) -> None:
    """Two runs' ``(4, P)`` step gradients agree within :data:`GRADIENT_RTOL` (relative norm of
    the difference, per step; printed with ``what``)."""
    assert found.shape == expected.shape == (4, found.shape[1])
    relative = [
        float((got - want).norm() / want.norm()) for got, want in zip(found, expected, strict=True)
    ]
    print(f"\n{what}: relative gradient differences per step {relative}")
    assert max(relative) < GRADIENT_RTOL, relative


def gradient_rank_main(
    local_rank: int,
    port: int,
    prepared: str,
    method: dict,
    out: str,
    gradients: Callable[[Path, dict, Rank], dict[str, Any]] | None = None,
) -> None:
    """One of two spawned processes: ``gradients(prepared, method, rank)`` (default
    :func:`_epoch_gradients`) under torchrun's environment; rank 0 saves it to ``out``."""
    _torchrun_env(local_rank, 2, port)
    torch.set_num_threads(1)
    with process_group(2, torch.device("cpu")) as rank:
        found = (gradients or _epoch_gradients)(Path(prepared), method, rank)
    if rank.main:
        torch.save(found, out)


@pytest.mark.parametrize(
    "architecture",
    # resnet10_small: closed-form Grad-CAM; densenet121: one autograd.grad per class inside
    # the DistributedDataParallel forward, differentiated again by the backward pass
    ["resnet10_small", "densenet121"],
)
def test_every_distributed_step_has_the_global_batch_gradient(
    tiny_params: Params, prepared_tiny: Path, tmp_path: Path, architecture: str
) -> None:
    """SIBnet's loss (task + normalised CD + SC) over two processes: every step's averaged
    gradient equals the single-process gradient of the same global batch (uneven last chunk
    included), and the term scales and epoch means agree."""
    method = tiny_params.method("sibnet").model_copy(update={"architecture": architecture})
    method_raw = method.model_dump(mode="json")
    torch.set_num_threads(1)
    expected = _epoch_gradients(prepared_tiny, method_raw, Rank())
    out = tmp_path / "found.pt"
    args = (_free_port(), str(prepared_tiny), method_raw, str(out))
    mp.spawn(gradient_rank_main, args=args, nprocs=2, join=True)
    found = torch.load(out, weights_only=False)
    assert_same_step_gradients(found["steps"], expected["steps"], architecture)
    assert found["scales"] == pytest.approx(expected["scales"], rel=1e-6)
    assert found["terms"] == pytest.approx(expected["terms"], rel=1e-6)


def test_two_processes_train_the_single_process_model(
    ddp_params: Params, prepared_tiny: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    epochs = EPOCHS
    with monkeypatch.context() as patch:
        _patch_norm(patch)
        one = _single(ddp_params, prepared_tiny, tmp_path / "one")
    two = _spawned(
        with_changes(ddp_params, train={"processes": 2}), prepared_tiny, tmp_path / "two", True
    )
    expected, found = pd.read_csv(one / "history.csv"), pd.read_csv(two / "history.csv")
    assert len(found) == epochs
    np.testing.assert_allclose(found.to_numpy(), expected.to_numpy(), rtol=EXACT_RTOL)
    model_one = torch.load(one / "classifier.pt", weights_only=True)["state_dict"]
    model_two = torch.load(two / "classifier.pt", weights_only=True)["state_dict"]
    assert model_one.keys() == model_two.keys()
    for name, value in model_one.items():
        torch.testing.assert_close(model_two[name], value, rtol=WEIGHT_RTOL, atol=WEIGHT_ATOL)
    # only rank 0 wrote: checkpoint, resume file (each epoch), MLflow run, history
    assert set(_calls(two, 1)) == {"train_epoch"}
    rank0 = _calls(two, 0)
    assert rank0.count("_write_resume") == epochs
    assert {"save_checkpoint", "start_run", "atomic_file"} <= set(rank0)
    assert not train_stage.resume_path(two / "classifier.pt").exists()


def test_killed_distributed_run_resumes_with_identical_outputs(
    ddp_params: Params, prepared_tiny: Path, tmp_path: Path
) -> None:
    """Two processes killed in epoch 2 continue from epoch 2 (each with its own random state)
    and end byte-identical to an uninterrupted two-process run."""
    params = with_changes(ddp_params, train={"processes": 2, "num_workers": 1})
    whole = _spawned(params, prepared_tiny, tmp_path / "whole")
    killed = tmp_path / "killed"
    with pytest.raises(mp.ProcessRaisedException, match="simulated kill"):
        _spawned(params, prepared_tiny, killed, kill_at=2)
    assert train_stage.resume_path(killed / "classifier.pt").exists()
    assert not (killed / "history.csv").exists()
    _spawned(params, prepared_tiny, killed)
    assert _calls(killed, 0).count("train_epoch") == EPOCHS - 1  # epoch 1 was not redone
    assert _calls(killed, 1) == ["train_epoch"] * (EPOCHS - 1)
    for name in ("classifier.pt", "history.csv"):
        assert (killed / name).read_bytes() == (whole / name).read_bytes(), name


def test_sibnet_train_under_torchrun_matches_one_process(
    ddp_params: Params, prepared_tiny: Path, tmp_path: Path
) -> None:
    """``sibnet train`` with processes 2 starts torchrun; rank 0 alone records the run."""
    import yaml

    one = _single(ddp_params, prepared_tiny, tmp_path / "one")
    raw = with_changes(ddp_params, train={"processes": 2}, tracking={"enabled": True})
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw.model_dump(mode="json")))
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    done = subprocess.run(
        [
            *(sys.executable, "-m", "sibnet.cli", "train", "--params", "params.yaml"),
            *("--prepared", str(prepared_tiny), "--checkpoint", "two/classifier.pt"),
            *("--history", "two/history.csv", "--method", "sibnet", "--seed", "0"),
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "torch.distributed.run --standalone" in done.stderr
    assert "[rank 0] sibnet.stages.train: best epoch" in done.stderr
    assert "[rank 1] sibnet.stages.train" not in done.stderr  # rank 1 logs warnings only
    two = tmp_path / "two"
    expected, found = pd.read_csv(one / "history.csv"), pd.read_csv(two / "history.csv")
    for column, tolerance in BN_TOLERANCE.items():
        np.testing.assert_allclose(found[column], expected[column], atol=tolerance, err_msg=column)
    assert load_checkpoint(two / "classifier.pt")[1]["extra"]["processes"] == 2

    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = mlflow.search_runs(experiment_names=[raw.tracking.experiment])
    assert len(runs) == 1 and (runs["status"] == "FINISHED").all()
    records = list((tmp_path / ".sibnet" / "lineage" / "train").rglob("*.json"))
    assert len(records) == 1
    assert json.loads(records[0].read_text())["mlflow_run_id"] == runs["run_id"][0]


def test_launch_command_runs_the_cli_module_under_torchrun() -> None:
    command = launch_command(["train", "--params", "p.yaml"], 4)
    assert command[:3] == [sys.executable, "-m", "torch.distributed.run"]
    assert command[command.index("--nproc-per-node") + 1] == "4"
    assert command[-4:] == ["sibnet.cli", "train", "--params", "p.yaml"]


def test_sharded_batches_partition_the_single_process_batches(
    caplog: pytest.LogCaptureFixture,
) -> None:
    order = list(range(23))
    chunks = [
        list(ShardedBatchSampler(order, 8, rank=r, world=3, drop_short=False)) for r in range(3)
    ]
    # global batches 8, 8, 7: chunks 3/3/2, 3/3/2, 3/2/2
    assert [len(c) for c in chunks[0]] == [3, 3, 3]
    assert [len(c) for c in chunks[2]] == [2, 2, 2]
    for step, start in enumerate((0, 8, 16)):
        joined = [i for rank in range(3) for i in chunks[rank][step]]
        assert joined == order[start : start + 8]
    sampler = ShardedBatchSampler(order, 8, rank=2, world=3, drop_short=False)
    assert [sampler.loss_factor(s) for s in range(3)] == pytest.approx([6 / 8, 6 / 8, 6 / 7])
    # a last batch smaller than the number of processes: skipped in training, kept otherwise
    with caplog.at_level("WARNING", "sibnet.distributed"):
        for rank in (0, 1):
            short = ShardedBatchSampler(list(range(17)), 8, rank=rank, world=2, drop_short=True)
            assert len(short) == 2
    assert caplog.text.count("the last batch of 1 image(s) is skipped") == 1  # by rank 0 only
    kept = [
        ShardedBatchSampler(list(range(17)), 8, rank=r, world=2, drop_short=False) for r in (0, 1)
    ]
    assert list(kept[0])[-1] == [16] and len(kept[0]) == 3  # rank 1 has no share of it
    assert len(kept[1]) == 2 and sorted(i for b in (*kept[0], *kept[1]) for i in b) == list(
        range(17)
    )


def test_sharded_sampler_draws_the_generator_like_a_single_loader() -> None:
    """Epoch after epoch, the shards of a RandomSampler are the single-process batches."""
    from torch.utils.data import BatchSampler, RandomSampler

    data = list(range(21))
    single_gen, shard_gen = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    single = BatchSampler(RandomSampler(data, generator=single_gen), 8, drop_last=False)
    shards = ShardedBatchSampler(
        RandomSampler(data, generator=shard_gen), 8, rank=0, world=2, drop_short=True
    )
    for _ in range(3):
        expected = [batch[: (len(batch) + 1) // 2] for batch in single]
        assert list(shards) == expected
        assert single_gen.get_state().equal(shard_gen.get_state())


def test_processes_must_divide_the_batch_and_match_torchrun(
    tiny_params: Params, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sibnet.config import ParamsError
    from sibnet.distributed import DistributedError

    raw = tiny_params.model_dump(mode="json")
    raw["train"] = {**raw["train"], "batch_size": 15, "processes": 2}
    with pytest.raises((ValueError, ParamsError), match="multiple of processes"):
        validate_params(raw)
    cases = [  # torchrun's environment, device, the error
        ({}, "cpu", "starts torchrun itself"),
        ({"LOCAL_RANK": "0", "WORLD_SIZE": "3"}, "cpu", "torchrun started 3 process"),
        (
            {"LOCAL_RANK": "0", "WORLD_SIZE": "2", "LOCAL_WORLD_SIZE": "2"},
            "cuda",
            "2 training processes on this node but 1",
        ),
    ]
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    for env, device, message in cases:
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        with pytest.raises(DistributedError, match=message), process_group(2, torch.device(device)):
            pass


def test_a_split_smaller_than_the_process_count_is_refused(
    ddp_params: Params, prepared_tiny: Path, tmp_path: Path
) -> None:
    from sibnet.distributed import DistributedError, Rank

    with pytest.raises(DistributedError, match=r"19 val image\(s\) cannot be shared by 20"):
        train_stage._train(
            ddp_params,
            Rank(rank=0, world=20),
            prepared=prepared_tiny,
            checkpoint=tmp_path / "classifier.pt",
            history=tmp_path / "history.csv",
            method="baseline",
            seed=0,
        )
    assert list(tmp_path.iterdir()) == []
