"""The training and inference loops shared by every stage that runs a classifier.

Device and precision: :func:`train_epoch` and :func:`predict` take a ``device`` (batches are
moved there; the model must already be), a ``precision`` (``"bf16"``: the objective or forward
pass runs under ``torch.autocast(device.type, dtype=torch.bfloat16)``) and ``channels_last``
(batches in ``torch.channels_last``). The defaults (CPU, ``"fp32"``, contiguous) change nothing
and keep CPU results bit-identical. ``sibnet train`` uses all three (``train.*``), ``sibnet
segment`` the device only (``segment.device``); evaluate, robustness and saliency run on the
CPU in float32.
"""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Callable, Mapping
from typing import Literal, TypeVar, cast

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, RandomSampler, SequentialSampler
from tqdm import tqdm

from sibnet.config import ParamsError
from sibnet.data.tensors import Batch, with_unlabeled
from sibnet.distributed import Rank, ShardedBatchSampler, all_reduce_sum
from sibnet.reproducibility import seeded_generator, worker_init_fn

__all__ = [
    "Precision",
    "autocast",
    "batch_to_device",
    "make_loader",
    "predict",
    "probabilities",
    "resolve_device",
    "to_device",
    "train_epoch",
]

Precision = Literal["fp32", "bf16"]

BatchT = TypeVar("BatchT", bound=Mapping[str, torch.Tensor])
"""A batch mapping of tensors with an ``image`` key."""

log = logging.getLogger(__name__)


def resolve_device(name: str, key: str = "train.device") -> torch.device:
    """``"auto"`` | ``"cpu"`` | ``"cuda"`` → a ``torch.device``; ``key``: the params key it came
    from, named in errors.

    ``auto`` is CUDA when ``torch.cuda.is_available()``, else the CPU (the fallback on a cluster
    node without a free GPU); the choice is logged.

    Raises:
        ParamsError: ``cuda`` was asked for but no GPU is visible (a ``ValueError``: the stage
            exits with status 2 and this message, before any work).
        ValueError: an unknown name.
    """
    available = torch.cuda.is_available()
    if name == "auto":
        device = torch.device("cuda" if available else "cpu")
        log.info("%s: auto → %s", key, device.type)
        return device
    if name == "cuda":
        if not available:
            raise ParamsError(
                f"{key} is 'cuda' but torch.cuda.is_available() is False (no visible GPU, "
                f"or a CPU-only torch {torch.__version__}); use 'auto' to fall back to the CPU"
            )
        return torch.device("cuda")
    if name == "cpu":
        return torch.device("cpu")
    raise ValueError(f"device must be 'auto', 'cpu' or 'cuda', got {name!r}")


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """``bf16``: ``torch.autocast(device.type, dtype=torch.bfloat16)``; ``fp32``: nothing."""
    if precision == "fp32":
        return contextlib.nullcontext()
    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    raise ValueError(f"precision must be 'fp32' or 'bf16', got {precision!r}")


def to_device(
    images: torch.Tensor, device: torch.device | None, channels_last: bool = False
) -> torch.Tensor:
    """Move a ``(B, C, H, W)`` batch to ``device`` (non-blocking from pinned memory), optionally
    in ``torch.channels_last`` format. With ``device=None`` and ``channels_last=False`` the batch
    is returned as it is."""
    if device is not None:
        images = images.to(device, non_blocking=True)
    if channels_last and images.dim() == 4:
        images = images.contiguous(memory_format=torch.channels_last)
    return images


def batch_to_device(
    batch: BatchT, device: torch.device | None, channels_last: bool = False
) -> BatchT:
    """Move every tensor of a batch mapping (:class:`~sibnet.data.tensors.Batch` or another) to
    ``device`` (non-blocking from pinned memory); ``image`` goes through :func:`to_device`
    (``channels_last`` applies to it alone). With ``device=None`` and ``channels_last=False``
    the tensors are returned as they are."""
    moved = {
        key: to_device(value, device, channels_last)
        if key == "image"
        else value.to(device, non_blocking=True)
        if device is not None
        else value
        for key, value in batch.items()
    }
    return cast(BatchT, moved)


def make_loader(
    dataset: Dataset,
    *,
    batch_size: int,
    shuffle: bool,
    seed: int,
    num_workers: int = 0,
    pin_memory: bool = False,
    shard: Rank | None = None,
) -> DataLoader:
    """A deterministic ``DataLoader``: shuffling from a seeded generator, seeded workers
    (:func:`sibnet.reproducibility.worker_init_fn`); ``pin_memory`` for CUDA training.

    ``shard`` (a :class:`~sibnet.distributed.Rank` of more than one process): the loader yields
    this process's chunk of each global batch of ``batch_size`` (a
    :class:`~sibnet.distributed.ShardedBatchSampler` over the order a single-process loader with
    the same seed draws). A shuffled (training) loader skips a last batch too small to share;
    an unshuffled (validation) one keeps every image.
    """
    generator = seeded_generator(seed)
    common = {
        "num_workers": num_workers,
        "generator": generator,
        "worker_init_fn": worker_init_fn,
        "persistent_workers": num_workers > 0,
        "pin_memory": pin_memory,
    }
    if shard is None or shard.world == 1:
        return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, **common)
    order = RandomSampler(dataset, generator=generator) if shuffle else SequentialSampler(dataset)
    sampler = ShardedBatchSampler(
        order, batch_size, rank=shard.rank, world=shard.world, drop_short=shuffle
    )
    return DataLoader(dataset, batch_sampler=sampler, **common)


def probabilities(logits: torch.Tensor, task: str) -> torch.Tensor:
    """``(B, C)`` logits → probabilities: softmax (multi-class) or sigmoid (multi-label)."""
    return logits.softmax(dim=1) if task == "multiclass" else logits.sigmoid()


def _progress(loader: DataLoader, description: str) -> tqdm:
    # disable=None: a bar on a terminal, silence in logs and CI.
    return tqdm(loader, desc=description, leave=False, disable=None, file=sys.stderr)


def train_epoch(
    model: nn.Module,
    loader: DataLoader,
    objective: Callable[[nn.Module, BatchT], tuple[torch.Tensor, dict[str, torch.Tensor]]],
    optimizer: torch.optim.Optimizer,
    *,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
    description: str = "train",
    device: torch.device | None = None,
    precision: Precision = "fp32",
    channels_last: bool = False,
    unlabeled: DataLoader | None = None,
) -> dict[str, float]:
    """One pass over ``loader`` minimising ``objective(model, batch)``.

    ``unlabeled``, if given, is a loader of unlabeled images (SIBnet+, a method's ``unlabeled:
    use``): every step joins its next batch to the labeled one
    (:func:`sibnet.data.tensors.with_unlabeled`: the labeled images first, a ``labeled`` flag
    per image), starting it again when it runs out; each epoch starts it afresh, so its order
    depends only on its generator's state at the epoch's start (what a resumed run restores).
    The epoch is the labeled loader's; the returned means are per labeled image. Data-parallel
    with unlabeled images, the objective weights each term by its own images' share
    (``set_shares``, see :class:`sibnet.losses.Objective`), since the task loss is a mean over
    the labeled images and CD and SC one over all of them. The gradients are then exact; the
    returned epoch means stay weighted by each process's labeled images, so in a step whose
    chunks split unevenly those of the other terms (and of the weighted loss) are close to the
    single-process ones, not equal.

    ``scheduler``, if given, steps after every batch. A loader over a
    :class:`~sibnet.distributed.ShardedBatchSampler` (data-parallel training, ``model`` wrapped
    in DistributedDataParallel) scales each process's loss so the averaged gradient is the
    global batch's, and the returned means are over every process's images. The loader yields
    mappings of tensors with an ``image`` ``(B, C_in, H, W)`` (a
    :class:`~sibnet.data.tensors.Batch`: ``target`` ``(B, C)`` and the optional keys; the
    segmentation stage's :class:`~sibnet.data.tensors.OrganMaskBatch`); every tensor goes to
    ``device`` (the model and objective must be there already) and the whole mapping to the
    objective. With ``precision="bf16"`` the objective (forward pass and loss) runs under
    autocast, the backward pass and optimiser step outside it.

    Returns:
        Mean per image of the loss (``"loss"``) and of each term the objective reports.
    """
    model.train()
    shard = _sharded(loader)
    unlabeled_shard = None if unlabeled is None else _sharded(unlabeled)
    if unlabeled_shard is not None and not hasattr(objective, "set_shares"):
        raise TypeError("data-parallel training with unlabeled images needs an Objective")
    totals: dict[str, torch.Tensor] = {}
    count = 0
    extra, extra_step = None if unlabeled is None else iter(unlabeled), 0
    for step, batch in enumerate(_progress(loader, description)):
        labeled = len(batch["image"])
        batch = batch_to_device(batch, device, channels_last)
        if unlabeled is not None:
            more = next(extra, None)  # type: ignore[call-overload]
            if more is None:  # a pass over the unlabeled images ended: the next one starts
                extra, extra_step = iter(unlabeled), 0
                more = next(extra, None)
                if more is None:
                    raise RuntimeError("the unlabeled images' loader yields no batch")
            batch = with_unlabeled(batch, batch_to_device(more, device, channels_last))
            if unlabeled_shard is not None:  # each term weighted by its own images' share
                objective.set_shares(  # type: ignore[attr-defined]
                    _shares(shard.sizes(step), unlabeled_shard.sizes(extra_step), shard.world)  # type: ignore[union-attr]
                )
            extra_step += 1
        images = batch["image"]
        optimizer.zero_grad(set_to_none=True)
        with autocast(images.device, precision):
            loss, terms = objective(model, batch)
        # a labeled-only data-parallel step is one mean over the labeled images: one factor
        plain = shard is None or unlabeled_shard is not None
        (loss if plain else loss * shard.loss_factor(step)).backward()  # type: ignore[union-attr]
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        for name, value in {"loss": loss.detach(), **terms}.items():
            totals[name] = totals.get(name, 0.0) + value * labeled
        count += labeled
    if shard is None:
        return {name: float(total) / count for name, total in totals.items()}
    names = sorted(totals)  # the same objective, so the same names, on every process
    summed = all_reduce_sum(
        torch.stack(
            [torch.as_tensor(totals[n], dtype=torch.float64).cpu() for n in names]
            + [torch.tensor(float(count), dtype=torch.float64)]
        )
    )
    return {name: float(summed[i] / summed[-1]) for i, name in enumerate(names)}


def _sharded(loader: DataLoader) -> ShardedBatchSampler | None:
    """The loader's :class:`~sibnet.distributed.ShardedBatchSampler`, if it is sharded."""
    sampler = loader.batch_sampler
    return sampler if isinstance(sampler, ShardedBatchSampler) else None


def _shares(labeled: tuple[int, int], unlabeled: tuple[int, int], world: int) -> dict[str, float]:
    """Each kind of term's data-parallel weight ``world · local / global`` in a step with
    ``(local, global)`` labeled and unlabeled images: ``labeled`` (a mean over the labeled
    images: the task loss), ``unlabeled`` (over the unlabeled ones), ``images`` (over both:
    CD, SC). DistributedDataParallel's average of the weighted gradients is then the gradient
    of the single-process step over the global batches."""
    (l_local, l_global), (u_local, u_global) = labeled, unlabeled
    return {
        "labeled": world * l_local / l_global,
        "unlabeled": world * u_local / u_global,
        "images": world * (l_local + u_local) / (l_global + u_global),
    }


@torch.no_grad()
def predict(
    model: nn.Module,
    loader: DataLoader,
    task: str,
    loss_fn: nn.Module | None = None,
    *,
    description: str = "predict",
    device: torch.device | None = None,
    precision: Precision = "fp32",
    channels_last: bool = False,
) -> tuple[np.ndarray, np.ndarray, float]:
    """Run ``model`` in eval mode over ``loader``'s :class:`~sibnet.data.tensors.Batch` es
    (``image`` and ``target`` are used; on ``device``, in ``precision``; see :func:`train_epoch`;
    the loss and probabilities are computed in float32).

    Returns:
        ``(probabilities, targets, loss)``: ``(N, C)`` float32 probabilities, ``(N, C)`` int8
        targets (unknown labels stay -1), and the mean loss per image (NaN without ``loss_fn``).
    """
    model.eval()
    probs, labels, total = [], [], 0.0
    batch: Batch
    for batch in _progress(loader, description):
        images, targets = to_device(batch["image"], device, channels_last), batch["target"]
        with autocast(images.device, precision):
            logits = model(images)
        logits = logits.float()
        if loss_fn is not None:
            total += float(loss_fn(logits, targets.to(logits.device))) * len(images)
        probs.append(probabilities(logits, task).float().cpu().numpy())
        labels.append(targets.numpy().astype(np.int8))
    count = sum(len(p) for p in probs)
    loss = total / count if loss_fn is not None else float("nan")
    return np.concatenate(probs), np.concatenate(labels), loss
