from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from monai.networks.nets import ResNet
from monai.networks.nets.resnet import ResNetBlock, ResNetBottleneck
from torch import nn

from sibnet.models.attention import (
    ATTENTION_KINDS,
    CBAM,
    SqueezeExcitation,
    add_attention,
    bottleneck_width,
)
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
    se = SqueezeExcitation(32, reduction=8, min_hidden=1)
    x = torch.randn(2, 32, 6, 6)
    first, second = se.mlp[0], se.mlp[2]
    assert first.out_channels == 4
    squeezed = x.mean(dim=(2, 3))  # (B, C)
    hidden = torch.relu(squeezed @ first.weight.flatten(1).T + first.bias)
    gate = torch.sigmoid(hidden @ second.weight.flatten(1).T + second.bias)  # (B, C)
    torch.testing.assert_close(se(x), x * gate[:, :, None, None])


WIDTHS = (16, 32, 64, 128)  # resnet10_small's block widths


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ({}, (8, 8, 8, 8)),  # defaults r = 16, floor 8 (was 1, 2, 4, 8 with max(1, C // 16))
        ({"reduction": 16, "min_hidden": 1}, (1, 2, 4, 8)),  # the old rule
        ({"reduction": 4, "min_hidden": 1}, (4, 8, 16, 32)),
        ({"reduction": 2, "min_hidden": 8}, (8, 16, 32, 64)),
        ({"reduction": 1, "min_hidden": 1}, (16, 32, 64, 128)),
        ({"reduction": 16, "min_hidden": 64}, (16, 32, 64, 64)),  # capped at C
        ({"reduction": 16, "min_hidden": 1000}, (16, 32, 64, 128)),
    ],
)
@pytest.mark.parametrize("block", [SqueezeExcitation, CBAM])
def test_bottleneck_widths(block: type[nn.Module], options: dict, expected: tuple) -> None:
    assert tuple(bottleneck_width(c, **options) for c in WIDTHS) == expected
    for channels, hidden in zip(WIDTHS, expected, strict=True):
        module = block(channels, **options)
        assert module.hidden == hidden
        assert (module.mlp[0].in_channels, module.mlp[0].out_channels) == (channels, hidden)
        assert (module.mlp[2].in_channels, module.mlp[2].out_channels) == (hidden, channels)


@pytest.mark.parametrize(
    ("channels", "min_hidden", "expected"), [(4, 8, 4), (1, 8, 1), (8, 8, 8), (12, 16, 12)]
)
def test_bottleneck_width_is_capped_at_the_channel_count(
    channels: int, min_hidden: int, expected: int
) -> None:
    assert bottleneck_width(channels, 16, min_hidden) == expected
    assert SqueezeExcitation(channels, min_hidden=min_hidden).mlp[0].out_channels == expected
    assert CBAM(channels, min_hidden=min_hidden).mlp[0].out_channels == expected


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(
    ("options", "expected"),
    [({}, [8, 8, 8, 8]), ({"reduction": 4, "min_hidden": 1}, [4, 8, 16, 32])],
)
def test_add_attention_passes_the_widths_to_every_block(
    kind: str, options: dict, expected: list
) -> None:
    model = add_attention(build_classifier("resnet10_small", 5), kind, **options)
    assert [module.hidden for module in _attention_modules(model)] == expected
    model = build_classifier("resnet10_small", 5, attention=kind, **options)
    assert [module.mlp[0].out_channels for module in _attention_modules(model)] == expected


def test_cbam_with_zero_weights_halves_twice() -> None:
    cbam = CBAM(16, reduction=4)
    with torch.no_grad():
        for parameter in cbam.parameters():
            parameter.zero_()
    x = torch.randn(2, 16, 9, 9)
    torch.testing.assert_close(cbam(x), x * 0.25, rtol=0, atol=0)


def test_cbam_spatial_gate_has_the_official_batch_norm() -> None:
    """As the official ``BasicConv(2, 1, 7, padding=3, relu=False, bn=True, bias=False)``."""
    cbam = CBAM(16)
    conv, norm = cbam.spatial, cbam.spatial_norm
    assert isinstance(conv, nn.Conv2d) and conv.bias is None
    assert (conv.in_channels, conv.out_channels, conv.kernel_size, conv.padding) == (
        2,
        1,
        (7, 7),
        (3, 3),
    )
    assert type(norm) is nn.BatchNorm2d and norm.num_features == 1
    assert (norm.eps, norm.momentum, norm.affine, norm.track_running_stats) == (
        1e-5,
        0.01,
        True,
        True,
    )
    assert sum(isinstance(m, nn.BatchNorm2d) for m in cbam.modules()) == 1
    assert sum(isinstance(m, nn.BatchNorm2d) for m in SqueezeExcitation(16).modules()) == 0


def _cbam_reference(cbam: CBAM, x: torch.Tensor, *, training: bool) -> torch.Tensor:
    """CBAM written out from the official code: channel gate, then max/mean pool → conv → BN → σ."""

    def mlp(v: torch.Tensor) -> torch.Tensor:  # (B, C) → (B, C), the official Linear layers
        hidden = torch.relu(F.linear(v, cbam.mlp[0].weight.flatten(1), cbam.mlp[0].bias))
        return F.linear(hidden, cbam.mlp[2].weight.flatten(1), cbam.mlp[2].bias)

    channel = torch.sigmoid(mlp(x.mean(dim=(2, 3))) + mlp(x.amax(dim=(2, 3))))
    refined = x * channel[:, :, None, None]
    pooled = torch.stack([refined.amax(dim=1), refined.mean(dim=1)], dim=1)  # max first
    conv = F.conv2d(pooled, cbam.spatial.weight, padding=cbam.spatial_kernel // 2)
    norm = cbam.spatial_norm
    if training:  # batch statistics (biased variance), as BatchNorm2d in train mode
        mean, var = conv.mean(), conv.var(unbiased=False)
    else:
        mean, var = norm.running_mean, norm.running_var
    normed = (conv - mean) / torch.sqrt(var + 1e-5) * norm.weight + norm.bias
    spatial = torch.sigmoid(normed)
    assert spatial.shape == (x.shape[0], 1, *x.shape[2:])
    return refined * spatial


@pytest.mark.parametrize("training", [False, True], ids=["eval", "train"])
def test_cbam_matches_a_hand_written_reference(training: bool) -> None:
    torch.manual_seed(1)
    cbam = CBAM(12, reduction=3, spatial_kernel=5, min_hidden=1)
    assert cbam.mlp[0].out_channels == 4
    with torch.no_grad():  # non-trivial batch norm parameters and statistics
        cbam.spatial_norm.weight.fill_(1.7)
        cbam.spatial_norm.bias.fill_(-0.3)
        cbam.spatial_norm.running_mean.fill_(0.2)
        cbam.spatial_norm.running_var.fill_(2.5)
    x = torch.randn(2, 12, 8, 10)
    expected = _cbam_reference(cbam, x, training=training)
    torch.testing.assert_close(cbam.train(training)(x), expected)
    if training:  # the official momentum 0.01 updates the running mean
        assert not torch.allclose(cbam.spatial_norm.running_mean, torch.tensor([0.2]))


def test_cbam_pools_max_before_mean() -> None:
    """Weights only on the first input channel of the spatial conv: the gate sees the max map."""
    cbam = CBAM(3, spatial_kernel=1).eval()
    with torch.no_grad():
        for parameter in cbam.mlp.parameters():
            parameter.zero_()  # channel gate σ(0 + 0) = 0.5 for every channel
        cbam.spatial.weight.copy_(torch.tensor([1.0, 0.0]).view(1, 2, 1, 1))
    x = torch.tensor([1.0, 2.0, 6.0]).view(1, 3, 1, 1)
    refined = x * 0.5
    gate = torch.sigmoid(torch.tensor(3.0) / (1 + 1e-5) ** 0.5)  # max 3, not mean 1.5
    with torch.no_grad():
        torch.testing.assert_close(cbam(x), refined * gate)


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
        (lambda: SqueezeExcitation(8, min_hidden=0), "min_hidden"),
        (lambda: SqueezeExcitation(8, min_hidden=8.0), "min_hidden"),
        (lambda: SqueezeExcitation(8, min_hidden=True), "min_hidden"),
        (lambda: CBAM(-1), "channels"),
        (lambda: CBAM(8, reduction=0), "reduction"),
        (lambda: CBAM(8, min_hidden=-2), "min_hidden"),
        (lambda: CBAM(8, min_hidden="8"), "min_hidden"),
        (lambda: bottleneck_width(8, 16, 0), "min_hidden"),
        (lambda: bottleneck_width(8, 0, 8), "reduction"),
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
    with pytest.raises(ValueError, match="min_hidden must be an integer >= 1, got 0"):
        add_attention(model, "cbam", min_hidden=0)
    with pytest.raises(ValueError, match="min_hidden"):
        add_attention(model, "none", min_hidden=1.5)
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
