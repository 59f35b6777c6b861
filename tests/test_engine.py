from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn.functional import binary_cross_entropy_with_logits

from sibnet.engine import (
    autocast,
    batch_to_device,
    make_loader,
    predict,
    resolve_device,
    to_device,
    train_epoch,
)
from sibnet.losses.task import MaskedBCEWithLogits, task_loss


def _batch(seed: int = 0, shape: tuple[int, int] = (16, 5)) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(shape, generator=generator)
    targets = (torch.rand(shape, generator=generator) < 0.3).float()
    return logits, targets


@pytest.mark.parametrize("weighted", [False, True])
def test_multilabel_loss_equals_bce_for_known_labels(weighted: bool) -> None:
    logits, targets = _batch()
    weights = torch.tensor([0.5, 1.0, 2.0, 3.0, 4.0]) if weighted else None
    loss = task_loss("multilabel", weights)
    assert isinstance(loss, MaskedBCEWithLogits)
    reference = binary_cross_entropy_with_logits(logits, targets, pos_weight=weights)
    assert float(loss(logits, targets)) == pytest.approx(float(reference), abs=1e-6)
    assert float(loss(logits, targets)) == pytest.approx(
        float(nn.BCEWithLogitsLoss(pos_weight=weights)(logits, targets)), abs=1e-6
    )


@pytest.mark.parametrize("weighted", [False, True])
def test_multilabel_loss_masks_unknown_labels(weighted: bool) -> None:
    logits, targets = _batch(seed=1)
    weights = torch.tensor([0.5, 1.0, 2.0, 3.0, 4.0]) if weighted else None
    unknown = torch.rand(targets.shape, generator=torch.Generator().manual_seed(2)) < 0.4
    masked = torch.where(unknown, torch.full_like(targets, -1.0), targets)
    logits.requires_grad_(True)
    value = task_loss("multilabel", weights)(logits, masked)
    assert torch.isfinite(value)
    elementwise = binary_cross_entropy_with_logits(
        logits.detach(), targets, pos_weight=weights, reduction="none"
    )
    expected = elementwise[~unknown].mean()
    assert float(value.detach()) == pytest.approx(float(expected), abs=1e-6)
    value.backward()
    assert (logits.grad[unknown] == 0).all()
    assert (logits.grad[~unknown] != 0).all()


def test_multilabel_loss_with_every_label_unknown_is_zero() -> None:
    logits, targets = _batch()
    logits.requires_grad_(True)
    value = task_loss("multilabel")(logits, torch.full_like(targets, -1.0))
    assert float(value.detach()) == 0.0
    value.backward()
    assert (logits.grad == 0).all()


def test_multilabel_loss_moves_its_weights_with_the_module() -> None:
    loss = task_loss("multilabel", torch.tensor([1.0, 2.0]))
    assert "pos_weight" in dict(loss.named_buffers())


def test_multiclass_loss_refuses_unknown_labels() -> None:
    logits = torch.randn(3, 3)
    targets = torch.eye(3)
    loss = task_loss("multiclass")
    assert torch.isfinite(loss(logits, targets))
    targets[1, 1] = -1
    with pytest.raises(
        ValueError, match="unknown \\(-1\\) labels are only supported in multilabel"
    ):
        loss(logits, targets)


def test_unknown_task() -> None:
    with pytest.raises(ValueError, match="task must be"):
        task_loss("regression")


def test_predict_passes_unknown_labels_through() -> None:
    images = torch.randn(6, 4)
    labels = torch.tensor([[1, 0], [-1, 1], [0, -1], [1, 1], [-1, -1], [0, 0]], dtype=torch.float32)
    items = [{"image": image, "target": label} for image, label in zip(images, labels, strict=True)]
    loader = make_loader(items, batch_size=4, shuffle=False, seed=0)
    model = nn.Linear(4, 2)
    probs, targets, loss = predict(model, loader, "multilabel", task_loss("multilabel"))
    assert targets.dtype == np.int8
    np.testing.assert_array_equal(targets, labels.numpy().astype(np.int8))
    assert probs.shape == (6, 2) and np.isfinite(loss)


def test_train_epoch_passes_the_whole_batch_to_the_objective() -> None:
    """Every key of a batch, the optional ``lesion_masks`` and ``labeled`` too, reaches the
    objective: an objective that needs them needs no engine change."""
    items = [
        {
            "image": torch.rand(1, 8, 8),
            "target": torch.eye(2)[i % 2],
            "lesion_masks": torch.zeros(2, 8, 8),
            "labeled": torch.tensor(i % 3 > 0),
        }
        for i in range(6)
    ]
    loader = make_loader(items, batch_size=4, shuffle=True, seed=0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 2))
    seen = []

    def objective(net: nn.Module, batch: dict) -> tuple[torch.Tensor, dict]:
        seen.append({key: tuple(value.shape) for key, value in batch.items()})
        loss = task_loss("multiclass")(net(batch["image"]), batch["target"])
        return loss, {"task": loss.detach(), "labeled": batch["labeled"].float().mean()}

    terms = train_epoch(model, loader, objective, torch.optim.SGD(model.parameters(), lr=0.1))
    assert seen == [
        {"image": (n, 1, 8, 8), "target": (n, 2), "lesion_masks": (n, 2, 8, 8), "labeled": (n,)}
        for n in (4, 2)
    ]
    assert set(terms) == {"loss", "task", "labeled"}


def test_batch_to_device_moves_every_tensor_and_formats_the_image_only() -> None:
    batch = {"image": torch.randn(2, 1, 8, 8), "lesion_masks": torch.zeros(2, 3, 8, 8)}
    same = batch_to_device(batch, None)
    assert all(same[key] is batch[key] for key in batch) and list(same) == list(batch)
    moved = batch_to_device(batch, torch.device("cpu"), channels_last=True)
    assert moved["image"].is_contiguous(memory_format=torch.channels_last)
    assert moved["lesion_masks"] is batch["lesion_masks"]


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is visible")
def test_device_auto_falls_back_to_the_cpu() -> None:
    assert resolve_device("auto") == torch.device("cpu")
    assert resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(ValueError, match=r"'cuda' but torch\.cuda\.is_available"):
        resolve_device("cuda")


def test_fp32_changes_nothing_and_bf16_autocasts() -> None:
    images = torch.randn(2, 1, 8, 8)
    assert to_device(images, None) is images
    assert to_device(images, torch.device("cpu")) is images
    moved = to_device(images, torch.device("cpu"), channels_last=True)
    assert moved.is_contiguous(memory_format=torch.channels_last)
    conv = nn.Conv2d(1, 2, 3)
    with autocast(torch.device("cpu"), "fp32"):
        assert conv(images).dtype == torch.float32
    with autocast(torch.device("cpu"), "bf16"):
        assert conv(images).dtype == torch.bfloat16
    with pytest.raises(ValueError, match="precision"):
        autocast(torch.device("cpu"), "fp16")
