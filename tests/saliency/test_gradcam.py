from __future__ import annotations

import pytest
import torch
from captum.attr import LayerGradCam
from torch import nn

from sibnet.models.classifier import build_classifier
from sibnet.saliency import cam_mode, default_cam_layer, grad_cam, logits_and_grad_cam, upsample

CASES = [
    (architecture, attention)
    for architecture in ("resnet10_small", "resnet18", "densenet121")
    for attention in ("none", "se", "cbam")
]


def _model(architecture: str, classes: int = 4, attention: str = "none") -> nn.Module:
    torch.manual_seed(0)
    return build_classifier(architecture, num_classes=classes, attention=attention).eval()


def _captum(model: nn.Module, layer: nn.Module, images: torch.Tensor, classes: int) -> torch.Tensor:
    explainer = LayerGradCam(model, layer)
    maps = [explainer.attribute(images, target=c, relu_attributions=True) for c in range(classes)]
    return torch.cat(maps, dim=1).detach()


@pytest.mark.parametrize(("architecture", "attention"), CASES)
def test_equals_captum_for_every_class(architecture: str, attention: str) -> None:
    model = _model(architecture, attention=attention)
    images = torch.rand(3, 1, 64, 64, generator=torch.Generator().manual_seed(1))
    layer = default_cam_layer(model)
    ours = grad_cam(model, images, layer=layer)
    reference = _captum(model, layer, images, 4)
    assert ours.shape == reference.shape == (3, 4, *reference.shape[-2:])
    assert reference.abs().max() > 0
    torch.testing.assert_close(ours, reference, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize(
    ("architecture", "expected"),
    [("resnet10_small", "closed_form"), ("resnet18", "closed_form"), ("densenet121", "autograd")],
)
def test_mode_detection(architecture: str, expected: str) -> None:
    model = _model(architecture)
    images = torch.rand(2, 1, 64, 64)
    assert cam_mode(model, default_cam_layer(model), images) == expected


def test_both_modes_agree_where_the_closed_form_applies() -> None:
    model = _model("resnet10_small")
    images = torch.rand(2, 1, 64, 64)
    closed = logits_and_grad_cam(model, images, mode="closed_form")
    autograd = logits_and_grad_cam(model, images, mode="autograd")
    torch.testing.assert_close(closed[0], autograd[0])
    torch.testing.assert_close(closed[1], autograd[1], rtol=1e-4, atol=1e-7)


def test_closed_form_would_be_wrong_after_an_inplace_relu() -> None:
    """DenseNet-121 applies ReLU in place after `features`: forcing the closed form differs
    from captum, while the detected (autograd) path matches it."""
    model = _model("densenet121")
    images = torch.rand(2, 1, 64, 64)
    layer = default_cam_layer(model)
    reference = _captum(model, layer, images, 4)
    forced = logits_and_grad_cam(model, images, mode="closed_form")[1]
    assert not torch.allclose(forced, reference, rtol=1e-3, atol=1e-5)
    torch.testing.assert_close(grad_cam(model, images), reference, rtol=1e-4, atol=1e-6)


def test_a_relu_between_layer_and_pooling_is_detected() -> None:
    class Net(nn.Module):
        def __init__(self, relu: bool) -> None:
            super().__init__()
            self.conv = nn.Conv2d(1, 6, 3, padding=1)
            self.relu = nn.ReLU(inplace=True) if relu else nn.Identity()
            self.fc = nn.Linear(6, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(self.relu(self.conv(x)).mean(dim=(2, 3)))

    images = torch.rand(2, 1, 8, 8) - 0.5
    for relu, expected in ((False, "closed_form"), (True, "autograd")):
        torch.manual_seed(0)
        net = Net(relu)
        assert cam_mode(net, net.conv, images) == expected
        reference = _captum(net, net.conv, images, 3)
        torch.testing.assert_close(grad_cam(net, images, layer=net.conv), reference)


def test_signed_maps_keep_negative_values() -> None:
    model = _model("resnet10_small")
    signed = grad_cam(model, torch.rand(2, 1, 64, 64), relu=False)
    assert (signed < 0).any()


@pytest.mark.parametrize("architecture", ["resnet10_small", "densenet121"])
def test_maps_are_differentiable_for_training(architecture: str) -> None:
    model = _model(architecture)
    model.train()
    logits, maps = logits_and_grad_cam(model, torch.rand(4, 1, 64, 64), create_graph=True)
    assert maps.requires_grad and logits.requires_grad
    (maps.pow(2).sum() + logits.sum()).backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    assert model.fc.weight.grad.abs().sum() > 0 if hasattr(model, "fc") else True


def test_maps_are_detached_by_default_and_hooks_removed() -> None:
    model = _model("resnet10_small")
    maps = grad_cam(model, torch.rand(2, 1, 64, 64))
    assert not maps.requires_grad
    assert not model.layer4._forward_hooks and not model.fc._forward_hooks


def test_cpu_default_gives_8x8_maps_at_128px_and_upsample() -> None:
    model = _model("resnet10_small")
    maps = grad_cam(model, torch.rand(2, 1, 128, 128))
    assert maps.shape == (2, 4, 8, 8)
    big = upsample(maps, (128, 128))
    assert big.shape == (2, 4, 128, 128)
    with pytest.raises(ValueError, match=r"\(B, C, h, w\)"):
        upsample(maps[0], (128, 128))


def test_cam_mode_leaves_batchnorm_statistics_alone() -> None:
    model = _model("resnet10_small").train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    cam_mode(model, model.layer4, torch.rand(4, 1, 64, 64))
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_unknown_model_needs_an_explicit_layer() -> None:
    with pytest.raises(ValueError, match="pass the layer explicitly"):
        default_cam_layer(nn.Sequential(nn.Conv2d(1, 2, 3)))


@pytest.mark.parametrize("alpha_grad", [True, False])
def test_alpha_gradient_is_the_same_in_both_modes(alpha_grad: bool) -> None:
    """``alpha_grad=False`` (captum's α, a constant) gives the same gradients in closed form and
    through autograd; with it on, the closed form's α = W / (h·w) takes gradient."""
    model = _model("resnet10_small").train()
    images = torch.rand(3, 1, 64, 64)
    gradients = {}
    for mode in ("closed_form", "autograd"):
        model.zero_grad()
        _, maps = logits_and_grad_cam(
            model, images, create_graph=True, relu=False, mode=mode, alpha_grad=alpha_grad
        )
        (maps**2).sum().backward()
        gradients[mode] = {
            n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None
        }
    assert gradients["closed_form"].keys() == gradients["autograd"].keys()
    assert ("fc.weight" in gradients["autograd"]) == alpha_grad
    for name, value in gradients["closed_form"].items():
        torch.testing.assert_close(value, gradients["autograd"][name], rtol=1e-3, atol=1e-6)
