from __future__ import annotations

import pytest
import torch

from sibnet.losses import SibnetObjective, TaskObjective, build_objective, task_loss
from sibnet.models.classifier import build_classifier
from sibnet.objectives import CrossEntropyParams, SibnetParams


def _batch(classes: int = 4) -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    model = build_classifier("resnet10_small", num_classes=classes).train()
    images = torch.rand(6, 1, 64, 64)
    targets = torch.eye(classes)[torch.arange(6) % classes]
    return model, images, targets


def test_cross_entropy_objective_is_the_task_loss() -> None:
    model, images, targets = _batch()
    objective = build_objective(CrossEntropyParams(), "multiclass")
    assert isinstance(objective, TaskObjective)
    torch.manual_seed(1)
    loss, terms = objective(model, {"image": images, "target": targets})
    assert set(terms) == {"task"} and torch.equal(loss.detach(), terms["task"])


def test_sibnet_first_step_is_normalised_to_the_weights() -> None:
    model, images, targets = _batch()
    method = SibnetParams(lambda_cd=1.2, lambda_sc=0.9)
    objective = build_objective(method, "multiclass")
    assert isinstance(objective, SibnetObjective)
    loss, terms = objective(model, {"image": images, "target": targets})
    assert set(terms) == {"task", "cd", "sc"}
    torch.testing.assert_close(loss.detach(), terms["task"] + 1.2 + 0.9)
    scales = objective.scales()
    assert scales == pytest.approx({"cd": float(terms["cd"]), "sc": float(terms["sc"])})
    objective(model, {"image": images * 0.5, "target": targets})
    assert objective.scales() == scales  # fixed after the first step


def test_without_normalisation_the_raw_terms_are_added() -> None:
    model, images, targets = _batch()
    objective = SibnetObjective(
        task_loss("multiclass"), lambda_cd=2.0, lambda_sc=0.5, normalize_terms=False
    )
    loss, terms = objective(model, {"image": images, "target": targets})
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
    _, terms = objective(model, {"image": images, "target": targets})
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
    with_term, _ = objective(model, {"image": images, "target": targets})
    task_only = task_loss("multiclass")(model(images), targets)
    (with_term - task_only).backward()  # the gradient of the saliency term alone
    grad = model.conv1.weight.grad
    assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0


def test_multilabel_and_densenet() -> None:
    torch.manual_seed(0)
    model = build_classifier("densenet121", num_classes=3).train()
    objective = build_objective(SibnetParams(), "multilabel")
    batch = {"image": torch.rand(4, 1, 64, 64), "target": torch.tensor([[1.0, 0, 1]] * 4)}
    loss, terms = objective(model, batch)
    loss.backward()
    assert torch.isfinite(loss) and set(terms) == {"task", "cd", "sc"}


def test_invalid_weights() -> None:
    with pytest.raises(ValueError, match="not all 0"):
        SibnetObjective(task_loss("multiclass"), lambda_cd=0, lambda_sc=0, normalize_terms=True)


# ------------------------------------------------------------ the formulation options


def _sibnet(**keys) -> SibnetObjective:
    objective = build_objective(SibnetParams(**keys), "multiclass")
    assert isinstance(objective, SibnetObjective)
    return objective


def test_term_names_follow_the_weights() -> None:
    assert TaskObjective(task_loss("multiclass")).term_names == ("task",)
    assert _sibnet().term_names == ("task", "cd", "sc")
    assert _sibnet(lambda_sc=0.0).term_names == ("task", "cd")
    assert _sibnet(lambda_cd=0, lambda_sc=0, lambda_faith=1.0).term_names == ("task", "faith")


def test_ramp_warmup_scales_the_terms_linearly_per_step() -> None:
    objective = _sibnet(warmup="ramp", warmup_epochs=2)
    factors = []
    for epoch in (1, 2, 3):
        objective.begin_epoch(epoch, steps=4)
        for _ in range(4):
            factors.append(objective.warmup_factor())
            objective._step += 1
    assert factors[:8] == pytest.approx([k / 8 for k in range(8)])
    assert factors[8:] == [1.0] * 4
    model, images, targets = _batch()
    objective.begin_epoch(1, steps=4)
    loss, terms = objective(
        model, {"image": images, "target": targets}
    )  # factor 0: the task loss, terms computed
    torch.testing.assert_close(loss.detach(), terms["task"])
    assert set(objective.scales()) == {"cd", "sc"}


def test_delay_warmup_skips_the_maps_then_takes_the_scales() -> None:
    objective = _sibnet(warmup="delay", warmup_epochs=1)
    model, images, targets = _batch()
    objective.begin_epoch(1, steps=1)
    loss, terms = objective(model, {"image": images, "target": targets})
    assert set(terms) == {"task"} and objective.scales() == {}
    objective.begin_epoch(2, steps=1)
    loss, terms = objective(model, {"image": images, "target": targets})
    assert set(terms) == {"task", "cd", "sc"}
    torch.testing.assert_close(loss.detach(), terms["task"] + 1.2 + 0.9)


def test_the_reference_weighting_normalises_the_task_loss_too() -> None:
    objective = _sibnet(
        lambda_cd=1.0, lambda_sc=1.0, normalize_task=True, task_weighting="batch_inverse_frequency"
    )
    model, images, targets = _batch()
    loss, _ = objective(model, {"image": images, "target": targets})
    torch.testing.assert_close(loss.detach(), torch.tensor(3.0))
    assert set(objective.scales()) == {"task", "cd", "sc"}


def test_batch_inverse_frequency_gives_every_present_class_the_same_weight() -> None:
    from sibnet.losses import batch_inverse_frequency_cross_entropy

    logits = torch.randn(5, 3)
    classes = torch.tensor([0, 0, 0, 1, 1])  # class 2 absent
    targets = torch.eye(3)[classes]
    per_image = torch.nn.functional.cross_entropy(logits, classes, reduction="none")
    expected = (per_image[:3].mean() + per_image[3:].mean()) / 2
    torch.testing.assert_close(batch_inverse_frequency_cross_entropy(logits, targets), expected)
    with pytest.raises(ValueError, match="task_weighting"):
        build_objective(
            SibnetParams(task_weighting="batch_inverse_frequency"),
            "multilabel",
        )


def test_a_term_that_is_zero_at_the_first_step_takes_its_scale_later() -> None:
    objective = _sibnet(lambda_cd=0.0)
    value = torch.tensor(0.0)
    assert objective._scaled("sc", value, 4) is value and objective.scales() == {}
    torch.testing.assert_close(objective._scaled("sc", torch.tensor(2.0), 4), torch.tensor(1.0))
    assert objective.scales() == {"sc": 2.0}


def test_alpha_without_gradient_reaches_the_network_only_through_the_activations() -> None:
    model, images, targets = _batch()
    model.zero_grad()
    TaskObjective(task_loss("multiclass"))(model, {"image": images, "target": targets})[
        0
    ].backward()
    task_only = model.fc.weight.grad.clone()
    for alpha_grad in (True, False):
        objective = _sibnet(lambda_sc=0.0, normalize_terms=False, cam_alpha_grad=alpha_grad)
        model.zero_grad()
        objective(model, {"image": images, "target": targets})[0].backward()
        # the head's weights are α (closed form): without α's gradient CD does not reach them
        assert torch.allclose(model.fc.weight.grad, task_only) != alpha_grad
        assert float(model.conv1.weight.grad.abs().max()) > 0


def test_sc_at_input_resolution_upsamples_the_maps(monkeypatch: pytest.MonkeyPatch) -> None:
    import sibnet.losses.sibnet_objective as objectives

    seen = []
    original = objectives.spatial_coherence

    def spy(maps, **kwargs):
        seen.append((tuple(maps.shape), kwargs))
        return original(maps, **kwargs)

    monkeypatch.setattr(objectives, "spatial_coherence", spy)
    model, images, targets = _batch()
    for mode in ("nearest", "bilinear"):
        _sibnet(sc_resolution="input", sc_upsample=mode, sc_regions="components")(
            model, {"image": images, "target": targets}
        )
    _sibnet()(model, {"image": images, "target": targets})
    assert [shape[-2:] for shape, _ in seen] == [(64, 64), (64, 64), (4, 4)]
    assert seen[0][1]["regions"] == "components"


def test_faithfulness_erases_the_salient_region_and_keeps_batchnorm_statistics() -> None:
    from sibnet.losses import erasure_mask, faithfulness

    model, images, targets = _batch()
    maps = torch.zeros(6, 4, 4, 4)
    maps[:, :, :2, :2] = 1.0  # salient: the top-left quarter
    mask = erasure_mask(maps.flatten(0, 1), (64, 64))
    assert float(mask[0, :20, :20].min()) > 0.99 and float(mask[0, 44:, 44:].max()) < 0.01
    before = {n: b.clone() for n, b in model.named_buffers()}
    maps.requires_grad_()
    value = faithfulness(model, images, maps, targets, "multiclass")
    value.backward()
    for name, buffer in model.named_buffers():
        assert torch.equal(buffer, before[name]), name
    present = targets.argmax(1)
    erased = images * (1 - erasure_mask(maps.detach()[torch.arange(6), present], (64, 64))[:, None])
    with torch.no_grad():
        expected = model(erased).softmax(1)[torch.arange(6), present].mean()
    torch.testing.assert_close(value.detach(), expected)
    assert maps.grad is not None and float(maps.grad.abs().max()) > 0


def test_faithfulness_objective_trains_and_handles_no_positive_label() -> None:
    from sibnet.losses import faithfulness

    objective = _sibnet(lambda_cd=0.0, lambda_sc=0.0, lambda_faith=0.5)
    model, images, targets = _batch()
    loss, terms = objective(model, {"image": images, "target": targets})
    loss.backward()
    torch.testing.assert_close(loss.detach(), terms["task"] + 0.5)
    empty = faithfulness(model, images, torch.rand(6, 4, 4, 4), torch.zeros(6, 4), "multilabel")
    assert float(empty) == 0.0
