from __future__ import annotations

import pytest
import torch

from sibnet.config import MethodParams
from sibnet.engine import task_loss
from sibnet.models.classifier import build_classifier
from sibnet.objectives import SibnetObjective, TaskObjective, build_objective


def _batch(classes: int = 4) -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    model = build_classifier("resnet10_small", num_classes=classes).train()
    images = torch.rand(6, 1, 64, 64)
    targets = torch.eye(classes)[torch.arange(6) % classes]
    return model, images, targets


def test_cross_entropy_objective_is_the_task_loss() -> None:
    model, images, targets = _batch()
    objective = build_objective(MethodParams(), "multiclass")
    assert isinstance(objective, TaskObjective)
    torch.manual_seed(1)
    loss, terms = objective(model, images, targets)
    assert set(terms) == {"task"} and torch.equal(loss.detach(), terms["task"])


def test_sibnet_first_step_is_normalised_to_the_weights() -> None:
    model, images, targets = _batch()
    method = MethodParams(objective="sibnet", lambda_cd=1.2, lambda_sc=0.9)
    objective = build_objective(method, "multiclass")
    assert isinstance(objective, SibnetObjective)
    loss, terms = objective(model, images, targets)
    assert set(terms) == {"task", "cd", "sc"}
    torch.testing.assert_close(loss.detach(), terms["task"] + 1.2 + 0.9)
    scales = objective.scales()
    assert scales == pytest.approx({"cd": float(terms["cd"]), "sc": float(terms["sc"])})
    objective(model, images * 0.5, targets)
    assert objective.scales() == scales  # fixed after the first step


def test_without_normalisation_the_raw_terms_are_added() -> None:
    model, images, targets = _batch()
    objective = SibnetObjective(
        task_loss("multiclass"), lambda_cd=2.0, lambda_sc=0.5, normalize_terms=False
    )
    loss, terms = objective(model, images, targets)
    expected = terms["task"] + 2.0 * terms["cd"] + 0.5 * terms["sc"]
    torch.testing.assert_close(loss.detach(), expected)
    assert objective.scales() == {}


@pytest.mark.parametrize(
    ("lambda_cd", "lambda_sc", "present"), [(1.0, 0.0, "cd"), (0.0, 1.0, "sc")]
)
def test_ablations_compute_only_their_term(
    lambda_cd: float, lambda_sc: float, present: str
) -> None:
    model, images, targets = _batch()
    objective = SibnetObjective(
        task_loss("multiclass"), lambda_cd=lambda_cd, lambda_sc=lambda_sc, normalize_terms=True
    )
    _, terms = objective(model, images, targets)
    assert set(terms) == {"task", present}


@pytest.mark.parametrize("term", ["cd", "sc"])
def test_each_term_trains_the_backbone(term: str) -> None:
    model, images, targets = _batch()
    weights = (
        {"lambda_cd": 1.0, "lambda_sc": 0.0}
        if term == "cd"
        else {"lambda_cd": 0.0, "lambda_sc": 1.0}
    )
    objective = SibnetObjective(task_loss("multiclass"), normalize_terms=False, **weights)
    with_term, _ = objective(model, images, targets)
    task_only = task_loss("multiclass")(model(images), targets)
    (with_term - task_only).backward()  # the gradient of the saliency term alone
    grad = model.conv1.weight.grad
    assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0


def test_multilabel_and_densenet() -> None:
    torch.manual_seed(0)
    model = build_classifier("densenet121", num_classes=3).train()
    objective = build_objective(MethodParams(objective="sibnet"), "multilabel")
    loss, terms = objective(model, torch.rand(4, 1, 64, 64), torch.tensor([[1.0, 0, 1]] * 4))
    loss.backward()
    assert torch.isfinite(loss) and set(terms) == {"task", "cd", "sc"}


def test_invalid_weights() -> None:
    with pytest.raises(ValueError, match="not both 0"):
        SibnetObjective(task_loss("multiclass"), lambda_cd=0, lambda_sc=0, normalize_terms=True)
