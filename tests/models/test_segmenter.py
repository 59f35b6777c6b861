from __future__ import annotations

import pytest
import torch
from monai.losses import DiceCELoss
from torch import nn

from sibnet.models.attention import ATTENTION_KINDS, CBAM, SqueezeExcitation
from sibnet.models.classifier import ARCHITECTURES, build_classifier
from sibnet.models.segmenter import (
    SEGMENTER_MODES,
    Segmenter,
    encoder_stages,
    segmentation_loss,
)

ARCHS = tuple(ARCHITECTURES)
SIZE = 64
# Input side per architecture: the smallest multiple of the total stride that keeps the tests
# fast (resnet18's stride-1 stem and DenseNet-121's width make them the costly ones).
SIDE = {"resnet10_small": 64, "resnet18": 32, "densenet121": 32}


def _segmenter(
    architecture: str, mode: str, attention: str = "none", k: int = 2
) -> tuple[nn.Module, Segmenter]:
    torch.manual_seed(0)
    classifier = build_classifier(architecture, num_classes=3, attention=attention)
    return classifier, Segmenter(classifier, architecture, k, mode=mode)


def _masks(b: int, k: int, size: int = SIZE) -> torch.Tensor:
    return (torch.rand(b, k, size, size) > 0.5).float()


def _clone_state(module: nn.Module) -> dict[str, torch.Tensor]:
    return {name: tensor.detach().clone() for name, tensor in module.state_dict().items()}


def _contains(container: nn.Module, module: nn.Module) -> bool:
    return any(candidate is module for candidate in container.modules())


def _taps(classifier: nn.Module) -> list[nn.Module]:
    """The classifier modules whose outputs should equal the encoder stages' outputs."""
    if hasattr(classifier, "features"):
        f = classifier.features
        return [f.relu0, f.denseblock1, f.denseblock2, f.denseblock3, f.norm5]
    c = classifier
    return [c.act, c.layer1, c.layer2, c.layer3, c.layer4]


# --- encoder stages ----------------------------------------------------------------------------


@pytest.mark.parametrize("architecture", ARCHS)
def test_stages_reproduce_the_classifier_activations(architecture: str) -> None:
    torch.manual_seed(0)
    classifier = build_classifier(architecture, num_classes=2, attention="se").eval()
    captured: list[torch.Tensor] = []
    hooks = [
        tap.register_forward_hook(lambda _m, _i, out: captured.append(out.clone()))
        for tap in _taps(classifier)
    ]
    side = SIDE[architecture]
    x = torch.randn(2, 1, side, side)
    with torch.no_grad():
        classifier(x)
    for hook in hooks:
        hook.remove()
    if architecture == "densenet121":  # MONAI applies the ReLU after norm5 in class_layers
        captured[-1] = torch.relu(captured[-1])

    stages, channels, strides = encoder_stages(classifier, architecture)
    with torch.no_grad():
        for stage, expected, c, s in zip(stages, captured, channels, strides, strict=True):
            x = stage(x)
            assert torch.equal(x, expected)
            assert x.shape == (2, c, side // s, side // s)


def test_stage_strides_and_channels() -> None:
    small = build_classifier("resnet10_small", 2)
    assert encoder_stages(small, "resnet10_small")[1:] == ([16, 16, 32, 64, 128], [2, 2, 4, 8, 16])
    dense = build_classifier("densenet121", 2)
    assert encoder_stages(dense, "densenet121")[1:] == (
        [64, 256, 512, 1024, 1024],
        [2, 4, 8, 16, 32],
    )
    # MONAI's ResNet stem stride is whatever conv1 has (1 by default): stem, then ×2 per stage.
    r18 = build_classifier("resnet18", 2)
    s = r18.conv1.stride[0]
    strides = [s * 2**i for i in range(5)]
    assert encoder_stages(r18, "resnet18")[1:] == ([64, 64, 128, 256, 512], strides)


@pytest.mark.parametrize("architecture", ["resnet10_small", "densenet121"])
def test_encoder_stages_leave_modes_and_buffers_alone(architecture: str) -> None:
    classifier = build_classifier(architecture, 2).train()
    part = classifier.features if architecture == "densenet121" else classifier.layer1
    part.eval()  # mixed modes, which must come back as they were
    modes = {name: m.training for name, m in classifier.named_modules()}
    before = _clone_state(classifier)
    encoder_stages(classifier, architecture)
    assert modes == {name: m.training for name, m in classifier.named_modules()}
    after = classifier.state_dict()
    assert all(torch.equal(before[name], after[name]) for name in before)


@pytest.mark.parametrize("architecture", ARCHS)
@pytest.mark.parametrize("attention", ("se", "cbam"))
def test_encoder_is_the_classifier_own_modules(architecture: str, attention: str) -> None:
    classifier, segmenter = _segmenter(architecture, "frozen", attention)
    if architecture == "densenet121":
        f = classifier.features
        owned = [f.conv0, f.denseblock1, f.transition1, f.denseblock4, f.norm5]
        assert segmenter.encoder[1][1] is f.denseblock1
    else:
        owned = [classifier.conv1, classifier.bn1, classifier.layer1, classifier.layer4]
        assert segmenter.encoder[0][0] is classifier.conv1
        assert segmenter.encoder[-1] is classifier.layer4
    assert all(_contains(segmenter.encoder, module) for module in owned)
    blocks = [m for m in classifier.modules() if isinstance(m, SqueezeExcitation | CBAM)]
    assert blocks and all(_contains(segmenter.encoder, block) for block in blocks)
    # Shared storage: the encoder's tensors are the classifier's, not copies.
    classifier_ptrs = {p.data_ptr() for p in classifier.parameters()}
    assert all(p.data_ptr() in classifier_ptrs for p in segmenter.encoder.parameters())
    # The classification head is not part of the segmenter.
    head = classifier.class_layers if architecture == "densenet121" else classifier.fc
    assert not _contains(segmenter, head)


# --- the segmenter ---------------------------------------------------------------------------


@pytest.mark.parametrize("architecture", ARCHS)
@pytest.mark.parametrize("attention", ATTENTION_KINDS)
@pytest.mark.parametrize("mode", SEGMENTER_MODES)
def test_output_shape_and_gradients(architecture: str, attention: str, mode: str) -> None:
    _, segmenter = _segmenter(architecture, mode, attention, k=3)
    side = SIDE[architecture]
    logits = segmenter(torch.randn(2, 1, side, side))
    assert logits.shape == (2, 3, side, side)
    assert torch.isfinite(logits).all()
    segmentation_loss()(logits, _masks(2, 3, side)).backward()
    assert all(p.grad is not None for p in segmenter.decoder_parameters())
    encoder_grads = [p.grad for p in segmenter.encoder.parameters()]
    if mode == "frozen":
        assert all(grad is None for grad in encoder_grads)
    else:
        assert all(grad is not None for grad in encoder_grads)


@pytest.mark.parametrize("architecture", ARCHS)
def test_sizes_off_the_stride_are_resized(architecture: str) -> None:
    _, segmenter = _segmenter(architecture, "frozen", k=1)
    segmenter.eval()
    with torch.no_grad():
        assert segmenter(torch.randn(1, 1, 38, 45)).shape == (1, 1, 38, 45)


@pytest.mark.parametrize("architecture", ARCHS)
def test_frozen_encoder_is_bit_identical_after_training(architecture: str) -> None:
    classifier, segmenter = _segmenter(architecture, "frozen", "cbam")
    before = _clone_state(classifier)
    decoder_before = [p.detach().clone() for p in segmenter.decoder_parameters()]

    trainable = segmenter.trainable_parameters()
    encoder_ids = {id(p) for p in segmenter.encoder.parameters()}
    assert not any(id(p) in encoder_ids for p in trainable)
    assert {id(p) for p in trainable} == {id(p) for p in segmenter.decoder_parameters()}
    assert not any(p.requires_grad for p in segmenter.encoder.parameters())

    # Even an optimiser over *all* parameters, with weight decay, must leave the encoder alone.
    optimizer = torch.optim.AdamW(segmenter.parameters(), lr=1e-2, weight_decay=0.1)
    loss_fn = segmentation_loss()
    segmenter.train()
    assert segmenter.training and all(m.training for m in segmenter.decoder.modules())
    assert not any(m.training for m in segmenter.encoder.modules())
    side = SIDE[architecture]
    for _ in range(3):
        x = torch.randn(2, 1, side, side) * 3 + 1  # shifted statistics: BN would notice
        loss = loss_fn(segmenter(x), _masks(2, 2, side))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert not any(m.training for m in segmenter.encoder.modules())

    after = classifier.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[name], after[name]) for name in before)
    changed = [
        not torch.equal(old, new)
        for old, new in zip(decoder_before, segmenter.decoder_parameters(), strict=True)
    ]
    assert all(changed)


def test_frozen_features_carry_no_graph() -> None:
    _, segmenter = _segmenter("resnet10_small", "frozen")
    features = segmenter.encode(torch.randn(1, 1, SIZE, SIZE, requires_grad=True))
    assert all(not f.requires_grad and f.grad_fn is None for f in features)
    segmenter.eval()
    assert not segmenter.training and not any(m.training for m in segmenter.modules())
    segmenter.train()
    assert not any(m.training for m in segmenter.encoder.modules())


@pytest.mark.parametrize("mode", ["finetune", "scratch"])
def test_finetune_trains_the_encoder(mode: str) -> None:
    classifier, segmenter = _segmenter("resnet10_small", mode, "se")
    before = _clone_state(classifier)
    assert all(p.requires_grad for p in segmenter.encoder.parameters())
    assert len(segmenter.trainable_parameters()) == len(list(segmenter.parameters()))
    assert segmenter.training and all(m.training for m in segmenter.encoder.modules())
    optimizer = torch.optim.Adam(segmenter.trainable_parameters(), lr=1e-2)
    for _ in range(2):
        loss = segmentation_loss()(segmenter(torch.randn(2, 1, SIZE, SIZE)), _masks(2, 2))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    after = classifier.state_dict()
    for name in ("conv1.weight", "layer4.0.conv2.weight", "bn1.running_mean"):
        assert not torch.equal(before[name], after[name]), name
    # The classification head is untouched (it is not part of the segmenter).
    assert torch.equal(before["fc.weight"], after["fc.weight"])


def _disks(n: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` noisy images ``(n, 1, 64, 64)`` of one bright disk each, and its mask."""
    yy, xx = torch.meshgrid(torch.arange(SIZE), torch.arange(SIZE), indexing="ij")
    centre = torch.randint(16, SIZE - 16, (n, 2), generator=gen)
    radius = torch.randint(8, 14, (n,), generator=gen)
    dist2 = (yy - centre[:, 0, None, None]) ** 2 + (xx - centre[:, 1, None, None]) ** 2
    mask = (dist2 <= radius[:, None, None] ** 2).float()[:, None]
    return mask + 0.3 * torch.randn(n, 1, SIZE, SIZE, generator=gen), mask


def test_scratch_segmenter_learns_disks() -> None:
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    images, masks = _disks(32, gen)
    test_images, test_masks = _disks(16, gen)
    _, segmenter = _segmenter("resnet10_small", "scratch", k=1)
    optimizer = torch.optim.Adam(segmenter.trainable_parameters(), lr=1e-2)
    loss_fn = segmentation_loss()
    segmenter.train()
    for _ in range(40):
        batch = torch.randperm(32, generator=gen)[:8]
        loss = loss_fn(segmenter(images[batch]), masks[batch])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    segmenter.eval()
    with torch.no_grad():
        predicted = (segmenter(test_images) > 0).float()
    dice = 2 * (predicted * test_masks).sum() / (predicted.sum() + test_masks.sum())
    assert dice > 0.7


# --- errors ----------------------------------------------------------------------------------


def test_unknown_architecture_or_mode_or_mismatch_raise() -> None:
    classifier = build_classifier("resnet10_small", 2)
    with pytest.raises(ValueError, match=r"unknown architecture 'vgg'.*resnet10_small"):
        encoder_stages(classifier, "vgg")
    with pytest.raises(ValueError, match=r"unknown architecture 'vgg'.*densenet121"):
        Segmenter(classifier, "vgg", 1, mode="frozen")
    with pytest.raises(ValueError, match=r"unknown mode 'partial'.*'frozen', 'finetune'"):
        Segmenter(classifier, "resnet10_small", 1, mode="partial")
    with pytest.raises(ValueError, match="expects a MONAI DenseNet"):
        encoder_stages(classifier, "densenet121")
    with pytest.raises(ValueError, match="num_outputs"):
        Segmenter(classifier, "resnet10_small", 0, mode="frozen")
    # A rejected mode leaves the classifier untouched.
    assert all(p.requires_grad for p in classifier.parameters())


# --- loss ------------------------------------------------------------------------------------


def test_loss_is_dice_plus_bce_per_structure() -> None:
    torch.manual_seed(0)
    loss_fn = segmentation_loss()
    logits, target = torch.randn(2, 3, 16, 16), _masks(2, 3, 16)
    per_structure = [loss_fn(logits[:, [k]], target[:, [k]]) for k in range(3)]
    torch.testing.assert_close(loss_fn(logits, target), torch.stack(per_structure).mean())
    # With one structure it is MONAI's DiceCELoss(sigmoid=True), which uses BCE only then.
    one = DiceCELoss(sigmoid=True)(logits[:, :1], target[:, :1])
    torch.testing.assert_close(per_structure[0], one)
    assert loss_fn(logits * 0 + 20 * (2 * target - 1), target) < 0.01
    with pytest.raises(ValueError, match="same shape"):
        loss_fn(logits, target[:, :1])
