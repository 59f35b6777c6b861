from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from monai.networks.nets import ResNet
from monai.networks.nets.resnet import ResNetBlock, ResNetBottleneck
from torch import nn

from sibnet.models.attention import ATTENTION_KINDS, CBAM, SqueezeExcitation, add_attention
from sibnet.models.classifier import ARCHITECTURES, build_classifier

KINDS = ("se", "cbam")
ATTENTION = (SqueezeExcitation, CBAM)


def _attention_modules(model: nn.Module) -> list[nn.Module]:
    return [module for module in model.modules() if isinstance(module, ATTENTION)]


def _n_params(model: nn.Module) -> int:
    return sum(parameter.numel() for parameter in model.parameters())


def _shortcut(block: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return x if block.downsample is None else block.downsample(x)


# --- the blocks on their own ------------------------------------------------------------------


@pytest.mark.parametrize("module", [SqueezeExcitation(8, 4), CBAM(8, 4), CBAM(3, 16, 3)])
def test_blocks_keep_the_input_shape(module: nn.Module) -> None:
    x = torch.randn(2, module.channels, 5, 7)
    assert module(x).shape == x.shape


def test_se_is_input_times_a_hand_computed_channel_gate() -> None:
    torch.manual_seed(0)
    se = SqueezeExcitation(32, reduction=8)
    x = torch.randn(2, 32, 6, 6)
    first, second = se.mlp[0], se.mlp[2]
    assert first.out_channels == 4
    squeezed = x.mean(dim=(2, 3))  # (B, C)
    hidden = torch.relu(squeezed @ first.weight.flatten(1).T + first.bias)
    gate = torch.sigmoid(hidden @ second.weight.flatten(1).T + second.bias)  # (B, C)
    torch.testing.assert_close(se(x), x * gate[:, :, None, None])


def test_se_hidden_width_is_at_least_one() -> None:
    assert SqueezeExcitation(4, reduction=16).mlp[0].out_channels == 1


def test_cbam_with_zero_weights_halves_twice() -> None:
    cbam = CBAM(16, reduction=4)
    with torch.no_grad():
        for parameter in cbam.parameters():
            parameter.zero_()
    x = torch.randn(2, 16, 9, 9)
    torch.testing.assert_close(cbam(x), x * 0.25, rtol=0, atol=0)


def test_cbam_matches_a_functional_reimplementation() -> None:
    torch.manual_seed(1)
    cbam = CBAM(12, reduction=3, spatial_kernel=5)
    x = torch.randn(2, 12, 8, 10)

    def mlp(v: torch.Tensor) -> torch.Tensor:  # (B, C) → (B, C)
        hidden = torch.relu(F.linear(v, cbam.mlp[0].weight.flatten(1), cbam.mlp[0].bias))
        return F.linear(hidden, cbam.mlp[2].weight.flatten(1), cbam.mlp[2].bias)

    channel = torch.sigmoid(mlp(x.mean(dim=(2, 3))) + mlp(x.amax(dim=(2, 3))))
    refined = x * channel[:, :, None, None]
    maps = torch.stack([refined.mean(dim=1), refined.amax(dim=1)], dim=1)
    spatial = torch.sigmoid(F.conv2d(maps, cbam.spatial.weight, padding=2))
    assert spatial.shape == (2, 1, 8, 10)
    torch.testing.assert_close(cbam(x), refined * spatial)


# --- inserted into the classifiers ------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("architecture", sorted(ARCHITECTURES))
def test_add_attention_to_every_block(architecture: str, kind: str) -> None:
    torch.manual_seed(0)
    model = build_classifier(architecture, num_classes=5)
    x = torch.rand(2, 1, 64, 64)
    is_resnet = isinstance(model, ResNet)
    pooled = model.layer4 if is_resnet else model.features  # input of global average pooling
    shapes: list[torch.Size] = []
    hook = pooled.register_forward_hook(lambda module, args, out: shapes.append(out.shape))
    with torch.no_grad():
        model.eval()(x)
    before = _n_params(model)

    assert add_attention(model, kind) is model
    n_blocks = sum(isinstance(m, ResNetBlock | ResNetBottleneck) for m in model.modules())
    inserted = _attention_modules(model)
    assert len(inserted) == (n_blocks if is_resnet else 4)
    assert all(type(module) is ATTENTION[KINDS.index(kind)] for module in inserted)
    assert _n_params(model) > before

    model.train()
    logits = model(x)
    assert logits.shape == (2, 5)
    assert shapes[1] == shapes[0]  # Grad-CAM's feature map is unchanged
    hook.remove()
    F.cross_entropy(logits, torch.tensor([0, 3])).backward()
    for module in inserted:
        grads = [parameter.grad for parameter in module.parameters()]
        assert all(grad is not None and torch.isfinite(grad).all() for grad in grads)
        assert any(grad.abs().sum() > 0 for grad in grads)


@pytest.mark.parametrize("architecture", sorted(ARCHITECTURES))
def test_none_leaves_the_model_alone(architecture: str) -> None:
    model = build_classifier(architecture, num_classes=5)
    keys = list(model.state_dict())
    assert add_attention(model, "none") is model
    assert list(model.state_dict()) == keys
    assert not _attention_modules(model)


def test_densenet_attention_follows_each_dense_block() -> None:
    model = add_attention(build_classifier("densenet121", num_classes=5), "se").eval()
    channels = []
    for k in range(1, 5):
        wrapped = model.features.get_submodule(f"denseblock{k}")
        assert isinstance(wrapped, nn.Sequential) and isinstance(wrapped[1], SqueezeExcitation)
        channels.append(wrapped[1].channels)
    assert channels == [256, 512, 1024, 1024]
    names = [name for name, _ in model.features.named_children()]
    assert names[-1] == "norm5" and names.index("denseblock4") == names.index("norm5") - 1


def _tiny_bottleneck_resnet() -> ResNet:
    return ResNet(
        block="bottleneck",
        layers=[1, 1, 1, 1],
        block_inplanes=[4, 8, 8, 8],
        spatial_dims=2,
        n_input_channels=1,
        num_classes=3,
    )


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(
    ("make", "path"),
    [
        (lambda: build_classifier("resnet10_small", 5), "layer2.0"),  # with a downsample
        (lambda: build_classifier("resnet18", 5), "layer1.1"),  # identity shortcut
        (_tiny_bottleneck_resnet, "layer3.0"),
    ],
    ids=["resnet10_small", "resnet18", "bottleneck"],
)
def test_resnet_attention_gates_the_residual_branch_before_the_addition(
    make, path: str, kind: str
) -> None:
    torch.manual_seed(0)
    model = add_attention(make(), kind).eval()
    block = model.get_submodule(path)
    last = "bn3" if isinstance(block, ResNetBottleneck) else "bn2"
    norm, attention = getattr(block, last)
    x = torch.randn(2, block.conv1.in_channels, 16, 16)
    seen: dict[str, torch.Tensor] = {}

    def keep(module: nn.Module, args: tuple, out: torch.Tensor) -> None:
        seen["in"], seen["out"] = args[0].clone(), out.clone()  # the block adds in place

    attention.register_forward_hook(keep)
    with torch.no_grad():
        out = block(x)
        # The attention sees the normalised residual branch ...
        branch = block.act(block.bn1(block.conv1(x)))
        if last == "bn3":
            branch = block.act(block.bn2(block.conv2(branch)))
            branch = block.conv3(branch)
        else:
            branch = block.conv2(branch)
        torch.testing.assert_close(seen["in"], norm(branch))
        assert seen["in"].shape == _shortcut(block, x).shape
        # ... and its output is what gets added to the shortcut, before the final ReLU.
        torch.testing.assert_close(out, torch.relu(seen["out"] + _shortcut(block, x)))
        # Closing the gate removes the branch only: the block becomes ReLU(shortcut).
        attention.mlp[2].weight.zero_()
        attention.mlp[2].bias.fill_(-1e4)
        torch.testing.assert_close(block(x), torch.relu(_shortcut(block, x)))


def test_initialisation_is_deterministic() -> None:
    states = []
    for _ in range(2):
        torch.manual_seed(3)
        states.append(add_attention(build_classifier("resnet10_small", 5), "cbam").state_dict())
    assert states[0].keys() == states[1].keys()
    assert all(torch.equal(states[0][key], states[1][key]) for key in states[0])


def test_new_blocks_follow_the_model_mode() -> None:
    model = add_attention(build_classifier("resnet10_small", 5).eval(), "se")
    assert not any(module.training for module in _attention_modules(model))


# --- bad arguments ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("make", "name"),
    [
        (lambda: SqueezeExcitation(0), "channels"),
        (lambda: SqueezeExcitation(8, reduction=0), "reduction"),
        (lambda: SqueezeExcitation(8, reduction=2.0), "reduction"),
        (lambda: CBAM(-1), "channels"),
        (lambda: CBAM(8, reduction=0), "reduction"),
        (lambda: CBAM(8, spatial_kernel=4), "spatial_kernel"),
        (lambda: CBAM(8, spatial_kernel=0), "spatial_kernel"),
    ],
)
def test_bad_block_arguments(make, name: str) -> None:
    with pytest.raises(ValueError, match=name):
        make()


def test_add_attention_rejects_bad_arguments_without_touching_the_model() -> None:
    model = build_classifier("resnet10_small", 5)
    keys = list(model.state_dict())
    with pytest.raises(ValueError, match=r"'sse'.*'none', 'se', 'cbam'"):
        add_attention(model, "sse")
    with pytest.raises(ValueError, match="reduction"):
        add_attention(model, "se", reduction=0)
    assert list(model.state_dict()) == keys
    add_attention(model, "se")
    with pytest.raises(ValueError, match="already has attention"):
        add_attention(model, "cbam")


def test_add_attention_rejects_other_networks() -> None:
    with pytest.raises(ValueError, match="accepted: the MONAI ResNet and DenseNet"):
        add_attention(nn.Sequential(nn.Conv2d(1, 4, 3), nn.Flatten()), "se")
    three_d = ResNet(block="basic", layers=[1, 1, 1, 1], block_inplanes=[4, 4, 4, 4])
    with pytest.raises(ValueError, match="2-D"):
        add_attention(three_d, "cbam")


def test_kinds() -> None:
    assert ATTENTION_KINDS == ("none", "se", "cbam")
