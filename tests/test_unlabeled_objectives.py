"""Unlabeled images in a training step (SIBnet+ and the entropy-minimisation reference): their
stored targets never reach a loss, and the label-free terms do see them."""

from __future__ import annotations

import pytest
import torch

from sibnet.data.tensors import Batch, with_unlabeled
from sibnet.losses import build_objective, prediction_entropy
from sibnet.models.classifier import build_classifier
from sibnet.objectives import CrossEntropyParams, EntropyMinimizationParams, SibnetParams

CLASSES = 4


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_classifier("resnet10_small", num_classes=CLASSES).train()


def _batches(task: str = "multiclass") -> tuple[Batch, Batch]:
    generator = torch.Generator().manual_seed(1)
    images = torch.rand(10, 1, 64, 64, generator=generator)
    if task == "multiclass":
        targets = torch.eye(CLASSES)[torch.arange(6) % CLASSES]
    else:
        targets = (torch.rand(6, CLASSES, generator=generator) > 0.5).float()
    labeled = {"image": images[:6], "target": targets}
    unlabeled = {"image": images[6:], "target": torch.full((4, CLASSES), -1.0)}
    return labeled, unlabeled


def _loss_and_grads(params, task: str, batch: Batch) -> tuple[torch.Tensor, list[torch.Tensor]]:
    model = _model()
    objective = build_objective(params, task)
    loss, _ = objective(model, batch)
    grads = torch.autograd.grad(loss, [p for p in model.parameters() if p.requires_grad])
    return loss.detach(), list(grads)


SIBNET_PLUS = SibnetParams(lambda_cd=0.012, lambda_sc=0.009, unlabeled="use")
ENTROPY = EntropyMinimizationParams(unlabeled="use", lambda_entropy=0.1)


@pytest.mark.parametrize("task", ["multiclass", "multilabel"])
@pytest.mark.parametrize(
    "params",
    [SIBNET_PLUS, SibnetParams(lambda_cd=0.01, lambda_faith=0.01, unlabeled="use"), ENTROPY],
    ids=["sibnet", "sibnet_faith", "entropy"],
)
def test_poisoned_unlabeled_labels_change_neither_loss_nor_gradients(params, task: str) -> None:
    labeled, unlabeled = _batches(task)
    clean = with_unlabeled(labeled, unlabeled)
    loss, grads = _loss_and_grads(params, task, clean)
    for poison in (
        torch.full((4, CLASSES), 1e6),
        torch.full((4, CLASSES), float("nan")),
        torch.eye(CLASSES),
    ):
        poisoned = with_unlabeled(labeled, {**unlabeled, "target": poison})
        loss_p, grads_p = _loss_and_grads(params, task, poisoned)
        assert torch.equal(loss, loss_p)
        assert all(torch.equal(a, b) for a, b in zip(grads, grads_p, strict=True))


def test_the_task_loss_takes_the_labeled_images_alone() -> None:
    # eval mode: batch norm does not mix the images, so the labeled logits are the same
    labeled, unlabeled = _batches()
    model = _model().eval()
    objective = build_objective(SIBNET_PLUS, "multiclass")
    _, joint = objective(model, with_unlabeled(labeled, unlabeled))
    alone = objective.task(model(labeled["image"]), labeled["target"])
    torch.testing.assert_close(joint["task"], alone.detach())


def test_the_saliency_terms_see_the_unlabeled_images() -> None:
    labeled, unlabeled = _batches()
    model = _model().eval()
    objective = build_objective(
        SibnetParams(lambda_cd=1.0, lambda_sc=1.0, normalize_terms=False, unlabeled="use"),
        "multiclass",
    )
    _, joint = objective(model, with_unlabeled(labeled, unlabeled))
    _, alone = objective(model, labeled)
    assert not torch.equal(joint["cd"], alone["cd"])
    assert not torch.equal(joint["sc"], alone["sc"])


def test_entropy_term_is_the_unlabeled_images_prediction_entropy() -> None:
    labeled, unlabeled = _batches()
    model = _model().eval()
    objective = build_objective(ENTROPY, "multiclass")
    loss, terms = objective(model, with_unlabeled(labeled, unlabeled))
    probs = model(unlabeled["image"]).softmax(1)
    expected = -(probs * probs.log()).sum(1).mean()
    torch.testing.assert_close(terms["entropy"], expected.detach())
    torch.testing.assert_close(loss.detach(), terms["task"] + 0.1 * terms["entropy"])


def test_binary_entropy_of_multilabel_predictions() -> None:
    logits = torch.tensor([[0.0, 2.0], [-1.0, 3.0]])
    p = logits.sigmoid()
    expected = (-(p * p.log() + (1 - p) * (1 - p).log())).mean()
    torch.testing.assert_close(prediction_entropy(logits, "multilabel"), expected)
    assert float(prediction_entropy(logits[:0], "multiclass")) == 0.0


def test_cross_entropy_refuses_a_batch_with_unlabeled_images() -> None:
    labeled, unlabeled = _batches()
    objective = build_objective(CrossEntropyParams(), "multiclass")
    with pytest.raises(ValueError, match="no term for unlabeled images"):
        objective(_model(), with_unlabeled(labeled, unlabeled))


def test_joined_batch_puts_the_labeled_images_first() -> None:
    labeled, unlabeled = _batches()
    joint = with_unlabeled(labeled, unlabeled)
    assert joint["labeled"].tolist() == [True] * 6 + [False] * 4
    assert torch.equal(joint["image"][:6], labeled["image"])
    assert list(joint) == ["image", "target", "labeled"]
    with pytest.raises(ValueError, match="differ in keys"):
        with_unlabeled(labeled, {"image": unlabeled["image"]})
