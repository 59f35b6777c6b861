"""Data-parallel training on one node: ``torchrun`` processes, DistributedDataParallel.

``train.processes: N`` (N > 1) makes ``sibnet train`` start itself again under ``torchrun``
(:func:`sibnet.launch.launch`: ``python -m torch.distributed.run --standalone
--nproc-per-node N -m sibnet.cli train ...``) and wait for it; the N processes join one
process group (:func:`process_group`): NCCL with one GPU each (``cuda:<LOCAL_RANK>``) when
training on CUDA, gloo on the CPU. Running ``torchrun ... -m sibnet.cli train ...`` yourself
works too, with ``--nproc-per-node`` equal to
``train.processes`` (another number is an error: the checkpoint records the params it was
trained with). One node only: ``--standalone`` picks a free port, so several training jobs can
share a node.

**The global batch.** ``train.batch_size`` is the batch of one optimiser step over all processes,
as in a single-process run. :class:`ShardedBatchSampler` draws the single-process run's batches,
in the same order from the same seeded generator, and gives each process one contiguous chunk
of each (sizes differ by at most one). Each process scales its loss by ``N · local / global``
(:meth:`ShardedBatchSampler.loss_factor`) before DistributedDataParallel averages the gradients,
so the step is the gradient of the global batch's mean loss. A last batch with fewer images
than processes is skipped (a warning says how many images that leaves out per epoch).

What differs from one process, then, is only what depends on the composition of a process's
chunk: batch-norm statistics (per process, as is usual for data-parallel classification:
PyTorch's SyncBatchNorm does not run on the CPU, and on GPUs it adds a collective operation per
batch-norm layer and step, 120 in DenseNet-121; it is not offered here),
task losses that are not a plain mean over images (class-weighted cross-entropy, multi-label
BCE with unknown labels: a mean over the process's known entries), and floating-point rounding.
``tests/stages/test_train_distributed.py`` measures both: with batch-independent normalisation
two processes give the single process's gradients and model within float rounding; with the
classifiers' batch norm, its history within the tolerance stated there. The NCCL (GPU) path
runs the same code with CUDA tensors; it has not been run on GPUs here.

**Who writes.** Only rank 0 writes the checkpoint, the history, the resume file, MLflow records
and the lineage record; the other ranks compute. Validation is sharded the same way (no image
dropped or repeated) and gathered on rank 0, with every rank using rank 0's batch-norm buffers,
which are also the ones saved.
"""

from __future__ import annotations

import contextlib
import datetime
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import Sampler

from sibnet.errors import SibnetError
from sibnet.launch import world_from_env

__all__ = [
    "TIMEOUT",
    "DistributedError",
    "Rank",
    "ShardedBatchSampler",
    "all_reduce_sum",
    "broadcast_buffers",
    "gather_objects",
    "gather_rows",
    "process_group",
    "unwrap",
]

log = logging.getLogger(__name__)

TIMEOUT = datetime.timedelta(minutes=60)
"""How long a process waits for the others at a collective operation before failing."""


class DistributedError(ValueError, SibnetError):
    """The processes asked for cannot run here (outside torchrun, wrong count, too few GPUs)."""


@dataclass(frozen=True)
class Rank:
    """One training process: ``rank`` of ``world`` processes, ``device`` its device."""

    rank: int = 0
    world: int = 1
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def main(self) -> bool:
        """Rank 0: the process that writes outputs."""
        return self.rank == 0


@contextlib.contextmanager
def process_group(processes: int, device: torch.device) -> Iterator[Rank]:
    """This process's :class:`Rank`; with ``processes > 1``, inside a joined process group.

    Args:
        processes: ``train.processes``; must equal ``torchrun``'s ``WORLD_SIZE`` when started
            by it.
        device: the device training was asked to use (:func:`sibnet.engine.resolve_device`);
            on CUDA each process takes ``cuda:<LOCAL_RANK>``.

    Raises:
        DistributedError: more than one process asked for outside ``torchrun``, a ``WORLD_SIZE``
            other than ``processes``, or fewer visible GPUs than processes on this node.
    """
    world = world_from_env()
    if world is None:
        if processes > 1:
            raise DistributedError(
                f"train.processes is {processes}: run `sibnet train`, which starts torchrun "
                f"itself, or `torchrun --nproc-per-node {processes} -m sibnet.cli train ...`"
            )
        yield Rank(device=device)
        return
    if world != processes:
        raise DistributedError(
            f"torchrun started {world} process(es) but train.processes is {processes}; "
            "they must agree (the checkpoint records the params it was trained with)"
        )
    if world == 1:
        yield Rank(device=device)
        return
    local_rank = int(os.environ["LOCAL_RANK"])
    if device.type == "cuda":
        local_world = int(os.environ.get("LOCAL_WORLD_SIZE", str(world)))
        visible = torch.cuda.device_count()
        if visible < local_world:
            raise DistributedError(
                f"{local_world} training processes on this node but {visible} visible GPU(s): "
                "request as many GPUs as train.processes (the train rule asks for that many), "
                "or set train.device: cpu"
            )
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(backend=backend, timeout=TIMEOUT)
    try:
        yield Rank(rank=dist.get_rank(), world=dist.get_world_size(), device=device)
    finally:
        dist.destroy_process_group()


def _active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def unwrap(model: nn.Module) -> nn.Module:
    """The module inside a ``DistributedDataParallel`` wrapper (any other module: itself)."""
    if isinstance(model, nn.parallel.DistributedDataParallel):
        return model.module
    return model


def all_reduce_sum(values: torch.Tensor) -> torch.Tensor:
    """The sum of ``values`` over all processes (``values`` itself with one process)."""
    if not _active():
        return values
    # NCCL reduces CUDA tensors only: reduce on this process's GPU, return on values' device.
    on = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else None
    work = values.to(on) if on is not None else values.clone()
    dist.all_reduce(work, op=dist.ReduceOp.SUM)
    return work.to(values.device)


def broadcast_buffers(model: nn.Module) -> None:
    """Copy rank 0's buffers (batch-norm running statistics) to every process, in place."""
    if _active():
        for buffer in unwrap(model).buffers():
            dist.broadcast(buffer.data, src=0)


def gather_objects(value: Any) -> list[Any] | None:
    """Every process's ``value`` on rank 0, in rank order; ``None`` on the other ranks.

    With one process: ``[value]``.
    """
    if not _active():
        return [value]
    found: list[Any] | None = [None] * dist.get_world_size() if dist.get_rank() == 0 else None
    dist.gather_object(value, found, dst=0)
    return found


def gather_rows(indices: np.ndarray, *arrays: np.ndarray) -> tuple[np.ndarray, ...] | None:
    """Put each process's rows back in dataset order on rank 0 (``None`` elsewhere).

    Args:
        indices: ``(n,)`` the dataset positions of this process's rows.
        arrays: ``(n, ...)`` arrays, one row per position.

    Returns:
        On rank 0 each array over all processes, ``(N, ...)``, row ``i`` the one of position
        ``i``; every position must appear exactly once.
    """
    found = gather_objects((np.asarray(indices), *arrays))
    if found is None:
        return None
    order = np.concatenate([part[0] for part in found])
    if not np.array_equal(np.sort(order), np.arange(len(order))):
        raise RuntimeError("gathered rows do not cover the dataset exactly once")
    places = np.argsort(order, kind="stable")
    return tuple(
        np.concatenate([part[k] for part in found])[places] for k in range(1, len(arrays) + 1)
    )


class ShardedBatchSampler(Sampler[list[int]]):
    """This process's share of the single-process run's batches.

    The global batches are those of ``BatchSampler(sampler, batch_size, drop_last=False)``; each
    is split into ``world`` contiguous chunks whose sizes differ by at most one (the first
    ``n mod world`` chunks one longer), and process ``rank`` gets chunk ``rank``.

    Args:
        sampler: the single-process order (a ``RandomSampler`` with the loader's seeded
            generator, or a ``SequentialSampler``); every process must draw the same order.
        batch_size: the global batch.
        rank, world: this process and the number of processes.
        drop_short: skip a global batch with fewer images than processes (training: every
            process must take part in every step). Without it such a batch gives the ranks
            beyond its size no chunk (validation, where the processes do not communicate per
            batch).
    """

    def __init__(
        self, sampler: Sampler[int], batch_size: int, *, rank: int, world: int, drop_short: bool
    ) -> None:
        if not 0 <= rank < world:
            raise ValueError(f"rank must be in [0, {world}), got {rank}")
        if batch_size < world:
            raise ValueError(f"batch_size {batch_size} is smaller than {world} processes")
        self.sampler = sampler
        self.batch_size = batch_size
        self.rank, self.world = rank, world
        self.drop_short = drop_short
        total = len(sampler)  # type: ignore[arg-type]
        sizes = [min(batch_size, total - start) for start in range(0, total, batch_size)]
        if drop_short and sizes and sizes[-1] < world:
            if rank == 0:  # said once, not by every process
                log.warning(
                    "the last batch of %d image(s) is skipped in every epoch: it cannot be "
                    "shared by %d processes",
                    sizes[-1],
                    world,
                )
            sizes = sizes[:-1]
        self.global_sizes = sizes

    def chunk(self, size: int) -> tuple[int, int]:
        """``(start, stop)`` of this rank's chunk in a global batch of ``size`` images."""
        base, extra = divmod(size, self.world)
        start = self.rank * base + min(self.rank, extra)
        return start, start + base + (self.rank < extra)

    def sizes(self, step: int) -> tuple[int, int]:
        """``(local, global)``: this rank's images and the global batch's in batch ``step``."""
        size = self.global_sizes[step]
        start, stop = self.chunk(size)
        return stop - start, size

    def loss_factor(self, step: int) -> float:
        """``world · local / global`` for batch ``step``: DistributedDataParallel's average of
        the processes' gradients, each scaled by it, is the gradient of the global mean."""
        local, size = self.sizes(step)
        return self.world * local / size

    def __iter__(self) -> Iterator[list[int]]:
        order = iter(self.sampler)
        for size in self.global_sizes:
            batch = [next(order) for _ in range(size)]
            start, stop = self.chunk(size)
            if stop > start:
                yield batch[start:stop]
        for _ in order:  # a skipped batch; and exhausting a RandomSampler draws from its
            pass  # generator once more, as the single-process loader does, keeping the epochs equal

    def __len__(self) -> int:
        return sum(1 for size in self.global_sizes if self.chunk(size)[1] > self.chunk(size)[0])
