"""``sibnet train``: one method × one seed on a prepared dataset → ``classifier.pt`` + history.

Device and precision come from ``train.device`` (``auto``: CUDA when visible, else the CPU),
``train.precision`` (``fp32`` | ``bf16`` autocast) and ``train.channels_last``; the defaults give
bit-identical CPU results. They apply to training and its per-epoch validation; segment has its
own ``segment.device``, and evaluate, robustness and saliency run on the CPU in float32.

Resuming: after every epoch the whole training state is written atomically to
``<checkpoint>.resume.pt`` (:func:`resume_path`; not a declared output, so Snakemake and DVC
neither see nor delete it when a job fails): model, optimiser and scheduler states, the
objective's state (SIBnet's term scales), every random generator (Python, NumPy, torch CPU and
CUDA, the data loaders'), the best epoch so far (its metrics and weights) and the history rows.
A later run of the same job (same params hash, method, seed, prepared-dataset manifest, torch
version and device) continues with the next epoch and ends with byte-identical outputs; a
resume file of another job is ignored (and logged). The file is removed once the checkpoint
and the history are written.

Unlabeled training images (a method's ``unlabeled``, :class:`sibnet.objectives.ObjectiveParams`):
``ignore`` trains on the labeled images and logs how many unlabeled ones it left out; ``use``
adds a second loader over the unlabeled images (its own seeded stream, ``seed +``
:data:`UNLABELED_SEED_OFFSET`; its generator is in the resume state) whose batches
:func:`sibnet.engine.train_epoch` joins to the labeled ones; ``oracle`` trains on the labeled
images and the unlabeled ones with their withheld labels
(:meth:`sibnet.data.tensors.PreparedImages.with_withheld`). Asking for unlabeled images the
prepared dataset lacks is a :class:`~sibnet.config.ParamsError` before training. Where the
dataset has unlabeled images the checkpoint's ``extra.unlabeled`` and the MLflow params record
what the run did with them.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn
from tqdm import tqdm

from sibnet.config import MethodParams, Params, ParamsError
from sibnet.data.prepared import PreparedDataset
from sibnet.data.tensors import PreparedImages
from sibnet.distributed import (
    DistributedError,
    Rank,
    broadcast_buffers,
    gather_objects,
    gather_rows,
    process_group,
)
from sibnet.engine import make_loader, predict, resolve_device, train_epoch
from sibnet.files import atomic_file
from sibnet.losses import build_objective
from sibnet.metrics.classification import macro_auc
from sibnet.models.classifier import build_classifier, params_hash, save_checkpoint
from sibnet.reproducibility import configure_torch, get_rng_state, seed_everything, set_rng_state
from sibnet.tracking import Tracker, start_run

__all__ = [
    "RESUME_FORMAT",
    "UNLABELED_SEED_OFFSET",
    "class_weights",
    "history_columns",
    "resume_path",
    "train",
    "training_params",
]

RESUME_FORMAT = "sibnet-train-resume/2"


def history_columns(terms: tuple[str, ...]) -> list[str]:
    """The columns of ``history.csv`` for an objective reporting ``terms``
    (:attr:`sibnet.losses.Objective.term_names`): ``epoch``, ``train_loss`` (the minimised
    total), ``train_<term>`` for each term, ``val_loss`` (the task loss) and ``val_auc``."""
    return ["epoch", "train_loss", *(f"train_{t}" for t in terms), "val_loss", "val_auc"]


log = logging.getLogger(__name__)


def training_params(params: Params, method: str) -> dict[str, Any]:
    """The params a classifier depends on (hashed into its checkpoint and logged to MLflow)."""
    return {
        "prepare": params.prepare.model_dump(mode="json"),
        "train": params.train.model_dump(mode="json"),
        "method": {"name": method, **params.method(method).model_dump(mode="json")},
    }


def resume_path(checkpoint: Path) -> Path:
    """The resume file of a training job: ``<checkpoint>.resume.pt`` beside the checkpoint."""
    checkpoint = Path(checkpoint)
    return checkpoint.with_name(checkpoint.name + ".resume.pt")


def _read_resume(path: Path, identity: dict[str, Any]) -> dict[str, Any] | None:
    """The resume state at ``path`` if it exists and belongs to this job, else ``None``."""
    if not path.is_file():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises several types for corrupt or foreign files
        log.warning("ignoring resume file %s: unreadable (%s)", path, error)
        return None
    if not isinstance(state, dict) or state.get("format") != RESUME_FORMAT:
        log.warning("ignoring resume file %s: not a %s file", path, RESUME_FORMAT)
        return None
    found = state.get("identity", {})
    differ = [key for key, value in identity.items() if found.get(key) != value]
    if differ:
        log.warning(
            "ignoring resume file %s: it belongs to another job (%s differ)",
            path,
            ", ".join(f"{key}: {found.get(key)!r} here {identity[key]!r}" for key in differ),
        )
        return None
    return state


def _write_resume(path: Path, state: dict[str, Any]) -> None:
    with atomic_file(path) as tmp, open(tmp, "wb") as handle:
        torch.save(state, handle)


def class_weights(labels: np.ndarray, task: str) -> torch.Tensor:
    """Class-frequency weights from ``(N, C)`` training labels.

    Multi-class: ``N / (C · n_c)`` (mean 1 over classes). Multi-label: ``pos_weight`` =
    negatives / positives per label, counting ``1`` as positive and ``0`` as negative, so
    unknown labels (-1, see :mod:`sibnet.data.prepared`) count as neither. A class without
    positives gets weight 1.
    """
    labels = np.asarray(labels)
    positives = (labels == 1).sum(axis=0).astype(np.float64)
    if task == "multiclass":
        weights = len(labels) / (labels.shape[1] * np.where(positives > 0, positives, np.nan))
    else:
        negatives = (labels == 0).sum(axis=0).astype(np.float64)
        weights = negatives / np.where(positives > 0, positives, np.nan)
    return torch.tensor(np.nan_to_num(weights, nan=1.0), dtype=torch.float32)


UNLABELED_SEED_OFFSET = 7919
"""The unlabeled images' loader shuffles with ``seed + UNLABELED_SEED_OFFSET`` (its own stream,
so its order is not the labeled loader's)."""


def _training_images(
    dataset: PreparedDataset, method: str, usage: str, rank: Rank
) -> tuple[PreparedImages, PreparedImages | None]:
    """The training images of a method with ``unlabeled: usage`` and, for ``use``, the
    unlabeled ones (see :class:`sibnet.objectives.ObjectiveParams`).

    Raises:
        ParamsError: the method asks for unlabeled images (or their withheld labels) the
            prepared dataset does not have; before any training.
    """
    count, withheld = dataset.n_unlabeled, len(dataset.withheld_indices())
    key = f"methods.{method}.unlabeled = {usage!r}"
    if usage != "ignore" and count == 0:
        raise ParamsError(
            f"{key} asks for unlabeled training images, but {dataset.root} has none "
            "(dataset.json has no 'unlabeled' entry); re-prepare with some or set unlabeled: "
            "ignore"
        )
    if usage == "oracle":
        if withheld < count:
            raise ParamsError(
                f"{key} trains with the withheld labels of the unlabeled images, but "
                f"{dataset.root} withholds labels for {withheld} of its {count}; accepted: "
                "use or ignore"
            )
        return PreparedImages.with_withheld(dataset), None
    if usage == "use":
        return PreparedImages(dataset, "train"), PreparedImages.unlabeled(dataset)
    if count and rank.main:
        log.info(
            "%s ignores the %d unlabeled training images of %s (methods.%s.unlabeled: ignore)",
            method,
            count,
            dataset.root,
            method,
        )
    return PreparedImages(dataset, "train"), None


def _unlabeled_record(
    dataset: PreparedDataset, spec: MethodParams, loader: torch.utils.data.DataLoader | None
) -> dict[str, Any]:
    """What a run did with the dataset's unlabeled images (MLflow params, the checkpoint)."""
    if not dataset.n_unlabeled:
        return {}
    added = spec.unlabeled_added(dataset.n_unlabeled, len(dataset.withheld_indices()))
    return {
        "unlabeled_usage": spec.unlabeled,
        "unlabeled_images": dataset.n_unlabeled,
        "unlabeled_images_used": sum(added),
        # the global batch: a BatchSampler's, or a ShardedBatchSampler's (several processes)
        "unlabeled_batch_size": 0 if loader is None else int(loader.batch_sampler.batch_size),
    }


def train(
    params: Params, *, prepared: Path, checkpoint: Path, history: Path, method: str, seed: int
) -> pd.DataFrame:
    """Train ``method`` with ``seed``; keep the epoch with the best validation macro AUC.

    With ``train.processes > 1`` this is one of the processes ``torchrun`` started
    (:mod:`sibnet.distributed`): the model is wrapped in DistributedDataParallel, each process
    takes its chunk of every global batch, and only rank 0 writes the outputs, the resume file
    and the MLflow run.

    Args:
        params: validated params (sections ``train`` and ``methods.<method>`` are used).
        prepared: prepared dataset folder.
        checkpoint: output ``classifier.pt`` (best epoch; see :func:`save_checkpoint`).
        history: output CSV, one row per epoch (:func:`history_columns`): the training loss
            and the terms the objective reports (the task loss; for SIBnet also class
            distinctiveness ``cd``, spatial coherence ``sc`` and faithfulness ``faith`` where
            their weight is not 0; empty in an epoch where a warm-up left a term off),
            validation task loss and macro AUC.
        method: name of a method in ``params.methods``.
        seed: seed of initialisation and shuffling.

    Returns:
        The training history (on ranks other than 0: an empty table).
    """
    device = resolve_device(params.train.device)
    with process_group(params.train.processes, device) as rank:
        return _train(
            params,
            rank,
            prepared=prepared,
            checkpoint=checkpoint,
            history=history,
            method=method,
            seed=seed,
        )


def _validate(
    model: nn.Module,
    loader: torch.utils.data.DataLoader,
    task: str,
    loss_fn: nn.Module,
    rank: Rank,
    steps: dict[str, Any],
) -> tuple[np.ndarray, np.ndarray, float] | None:
    """Validation probabilities, targets and mean loss over the whole split, on rank 0.

    With several processes each scores its shard (with rank 0's batch-norm buffers) and rank 0
    gathers the rows in dataset order; the other ranks get ``None``.
    """
    if rank.world == 1:
        return predict(model, loader, task, loss_fn, **steps)
    broadcast_buffers(model)
    probs, targets, loss = predict(model, loader, task, loss_fn, **steps)
    rows = np.concatenate([np.asarray(batch) for batch in loader.batch_sampler])
    # each row carries its shard's mean loss, so the mean over rows is the mean over images
    gathered = gather_rows(rows, probs, targets, np.full(len(probs), loss))
    if gathered is None:
        return None
    return gathered[0], gathered[1], float(gathered[2].mean())


def _train(
    params: Params,
    rank: Rank,
    *,
    prepared: Path,
    checkpoint: Path,
    history: Path,
    method: str,
    seed: int,
) -> pd.DataFrame:
    settings = params.train
    spec = params.method(method)
    device = rank.device
    configure_torch(settings.threads, warn_only=device.type == "cuda")
    dataset = PreparedDataset.open(prepared, verify=True)
    train_set, unlabeled_set = _training_images(dataset, method, spec.unlabeled, rank)
    val_set = PreparedImages(dataset, "val")
    shared = [("train", train_set), ("val", val_set), ("unlabeled train", unlabeled_set)]
    for split, images in shared:
        if images is not None and len(images) < rank.world:
            raise DistributedError(
                f"{prepared}: {len(images)} {split} image(s) cannot be shared by "
                f"{rank.world} training processes; lower train.processes"
            )

    seed_everything(seed)
    model = build_classifier(
        spec.architecture,
        num_classes=len(dataset.classes),
        attention=spec.attention,
        reduction=spec.attention_reduction,
        min_hidden=spec.attention_min_hidden,
    )
    model = model.to(device)
    if settings.channels_last:
        model = model.to(memory_format=torch.channels_last)
    weights = None
    if settings.class_weights:
        weights = class_weights(train_set.targets, dataset.task)
    objective = build_objective(spec, dataset.task, weights).to(device)
    optimizer = torch.optim.Adam(
        model.parameters(), lr=settings.learning_rate, weight_decay=settings.weight_decay
    )
    pin = device.type == "cuda"
    train_loader = make_loader(
        train_set,
        batch_size=settings.batch_size,
        shuffle=True,
        seed=seed,
        num_workers=settings.num_workers,
        pin_memory=pin,
        shard=rank,
    )
    val_loader = make_loader(
        val_set,
        batch_size=settings.batch_size,
        shuffle=False,
        seed=seed,
        pin_memory=pin,
        shard=rank,
    )
    unlabeled_loader = None
    if unlabeled_set is not None:
        unlabeled_loader = make_loader(
            unlabeled_set,
            batch_size=spec.unlabeled_batch_size(settings.batch_size, rank.world),
            shuffle=True,
            seed=seed + UNLABELED_SEED_OFFSET,
            num_workers=settings.num_workers,
            pin_memory=pin,
            shard=rank,
        )
    scheduler = None
    if settings.lr_schedule == "cosine":
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(
            optimizer, T_max=settings.epochs * len(train_loader)
        )
    generators = {"train": train_loader.generator, "val": val_loader.generator}
    if unlabeled_loader is not None:
        generators["unlabeled"] = unlabeled_loader.generator
    steps: dict[str, Any] = {
        "device": device,
        "precision": settings.precision,
        "channels_last": settings.channels_last,
    }

    described = training_params(params, method)
    identity = {
        "params_sha256": params_hash(described),
        "method": method,
        "seed": seed,
        "prepared_manifest_sha256": dataset.meta["manifest_sha256"],
        "torch": str(torch.__version__),
        "device": device.type,
    }
    resume = resume_path(checkpoint)
    rows: list[dict[str, float]] = []
    best: dict[str, Any] = {}
    first = 1
    state = _read_resume(resume, identity)
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        if scheduler is not None:
            scheduler.load_state_dict(state["scheduler"])
        objective.load_resume_state(state["objective"])
        rows, best, first = list(state["rows"]), dict(state["best"]), int(state["epoch"]) + 1
        for loader in (train_loader, unlabeled_loader):
            if loader is not None and loader.persistent_workers:
                # The original run drew the workers' base seed from the loader's generator in
                # its first epoch only; start the workers now, then restore the generator.
                iter(loader)
        set_rng_state(state["rng"][rank.rank], generators)
        if rank.main:
            log.info("resuming %s seed %d from %s: epoch %d next", method, seed, resume, first)
        del state
    net: nn.Module = model
    if rank.world > 1:
        net = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )

    tracking = (
        start_run(params, stage="train", method=method, seed=seed)
        if rank.main
        else contextlib.nullcontext(Tracker(None))
    )
    with tracking as tracker:
        used = _unlabeled_record(dataset, spec, unlabeled_loader)
        tracker.log_params({**described, "seed": seed, "task": dataset.task, **used})
        for epoch in tqdm(
            range(first, settings.epochs + 1),
            desc=f"{method} seed {seed}",
            disable=None if rank.main else True,
            initial=first - 1,
            total=settings.epochs,
        ):
            started = time.perf_counter()
            objective.begin_epoch(epoch, len(train_loader))
            terms = train_epoch(
                net,
                train_loader,
                objective,
                optimizer,
                scheduler=scheduler,
                unlabeled=unlabeled_loader,
                **steps,
            )
            scored = _validate(model, val_loader, dataset.task, objective.task, rank, steps)
            rng = gather_objects(get_rng_state(generators))
            if scored is None or rng is None:  # not rank 0: rank 0 records the epoch
                continue
            probs, targets, val_loss = scored
            val_auc = macro_auc(probs, targets)
            row = {
                "epoch": epoch,
                "train_loss": terms["loss"],
                **{f"train_{t}": terms.get(t, float("nan")) for t in objective.term_names},
                "val_loss": val_loss,
                "val_auc": val_auc,
            }
            rows.append(row)
            log.info(
                "%s seed %d epoch %d/%d: %s",
                method,
                seed,
                epoch,
                settings.epochs,
                " ".join(f"{k} {v:.4f}" for k, v in row.items() if k != "epoch"),
            )
            tracker.log_metrics({**row, "epoch_seconds": time.perf_counter() - started}, step=epoch)
            score = val_auc if np.isfinite(val_auc) else -np.inf  # NaN: no AUC defined
            if not best or score > best["score"]:
                best = {
                    **row,
                    "score": score,
                    "state": copy.deepcopy(model.state_dict()),
                    "optimizer": copy.deepcopy(optimizer.state_dict()),
                    "scheduler": None if scheduler is None else scheduler.state_dict(),
                }
            _write_resume(
                resume,
                {
                    "format": RESUME_FORMAT,
                    "identity": identity,
                    "epoch": epoch,
                    "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "scheduler": None if scheduler is None else scheduler.state_dict(),
                    "objective": objective.resume_state(),
                    "rng": rng,
                    "best": best,
                    "rows": rows,
                },
            )
        if not rank.main:
            return pd.DataFrame(columns=history_columns(objective.term_names))

        table = pd.DataFrame(rows, columns=history_columns(objective.term_names))
        log.info("best epoch %d (val_auc %.4f) → %s", best["epoch"], best["val_auc"], checkpoint)
        model.load_state_dict(best["state"])
        optimizer.load_state_dict(best["optimizer"])
        save_checkpoint(
            checkpoint,
            model,
            architecture=spec.architecture,
            num_classes=len(dataset.classes),
            in_channels=1,
            attention=spec.attention,
            reduction=spec.attention_reduction,
            min_hidden=spec.attention_min_hidden,
            classes=dataset.classes,
            task=dataset.task,
            optimizer=optimizer,
            scheduler_state=best["scheduler"],
            epoch=int(best["epoch"]),
            metrics={k: float(best[k]) for k in ("train_loss", "val_loss", "val_auc")},
            params_sha256=params_hash(described),
            extra={
                "dataset": params.prepare.dataset,
                "method": method,
                "seed": seed,
                "prepared_manifest_sha256": dataset.meta["manifest_sha256"],
                "terms": list(objective.term_names),
                "term_scales": objective.scales(),
                "processes": rank.world,
                # only where the dataset has unlabeled images: other checkpoints stay as before
                **({"unlabeled": used} if dataset.n_unlabeled else {}),
            },
        )
        with atomic_file(history) as tmp:
            table.to_csv(tmp, index=False, float_format="%.6f")
        resume.unlink(missing_ok=True)
        tracker.log_metrics(
            {"best_epoch": best["epoch"], "best_val_auc": best["val_auc"]}, step=settings.epochs
        )
        tracker.log_artifact(checkpoint)
        tracker.log_artifact(history)
        if tracker.enabled:  # the figure is only an MLflow artifact
            from sibnet.plots.runs import plot_training_curves

            with tempfile.TemporaryDirectory() as folder:
                figure = Path(folder) / "training_curves.png"
                plot_training_curves(table, figure, f"{method} · seed {seed}")
                tracker.log_artifact(figure)
    return table
