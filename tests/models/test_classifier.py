from __future__ import annotations

from pathlib import Path

import pytest
import torch

from sibnet.models.attention import CBAM, SqueezeExcitation
from sibnet.models.classifier import (
    ARCHITECTURES,
    CheckpointError,
    build_classifier,
    load_checkpoint,
    save_checkpoint,
)


@pytest.mark.parametrize(
    ("architecture", "size"), [("resnet10_small", 128), ("resnet18", 64), ("densenet121", 64)]
)
def test_output_shape(architecture: str, size: int) -> None:
    model = build_classifier(architecture, num_classes=5).eval()
    with torch.no_grad():
        logits = model(torch.rand(2, 1, size, size))
    assert logits.shape == (2, 5)


def test_cpu_default_keeps_an_8x8_map_at_128px() -> None:
    """Grad-CAM needs a fine last feature map: 128 px → 8×8 before global pooling."""
    model = build_classifier("resnet10_small", num_classes=4).eval()
    seen: dict[str, torch.Size] = {}

    def keep_shape(module: torch.nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        seen["shape"] = output.shape

    model.layer4.register_forward_hook(keep_shape)
    with torch.no_grad():
        model(torch.rand(1, 1, 128, 128))
    assert seen["shape"][-2:] == (8, 8)


def _save(
    path: Path,
    model: torch.nn.Module,
    architecture: str = "resnet10_small",
    attention: str = "none",
    **widths: int,
) -> None:
    save_checkpoint(
        path,
        model,
        architecture=architecture,
        num_classes=3,
        in_channels=1,
        attention=attention,
        **widths,
        classes=["a", "b", "c"],
        task="multiclass",
        optimizer=torch.optim.Adam(model.parameters()),
        epoch=4,
        metrics={"val_auc": 0.9},
        params_sha256="0" * 64,
        extra={"seed": 1},
    )


def test_checkpoint_round_trip_weights_only(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = build_classifier("resnet10_small", num_classes=3)
    path = tmp_path / "classifier.pt"
    _save(path, model)
    raw = torch.load(path, weights_only=True)
    assert raw["architecture"] == "resnet10_small" and raw["epoch"] == 4
    assert raw["model_args"] == {"num_classes": 3, "in_channels": 1, "attention": "none"}
    assert raw["optimizer"] is not None and raw["params_sha256"] == "0" * 64
    loaded, meta = load_checkpoint(path, architecture="resnet10_small")
    assert not loaded.training
    x = torch.rand(2, 1, 64, 64)
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))
    assert meta["classes"] == ["a", "b", "c"]


def test_identical_checkpoints_have_identical_bytes(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = build_classifier("resnet10_small", num_classes=3)
    _save(tmp_path / "one.pt", model)
    _save(tmp_path / "two.pt", model)
    assert (tmp_path / "one.pt").read_bytes() == (tmp_path / "two.pt").read_bytes()


def test_checkpoint_of_another_architecture_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "classifier.pt"
    _save(path, build_classifier("resnet18", num_classes=3), architecture="resnet18")
    with pytest.raises(CheckpointError, match="is a 'resnet18' network, but 'densenet121'"):
        load_checkpoint(path, architecture="densenet121")


def test_foreign_and_missing_files(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="checkpoint not found"):
        load_checkpoint(tmp_path / "none.pt")
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a zip")
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        load_checkpoint(junk)
    other = tmp_path / "other.pt"
    torch.save({"state_dict": {}}, other)
    with pytest.raises(CheckpointError, match="not a sibnet classifier checkpoint"):
        load_checkpoint(other)


def test_unknown_architecture() -> None:
    with pytest.raises(
        ValueError, match="accepted: " + str(sorted(ARCHITECTURES)).replace("[", r"\[")
    ):
        build_classifier("vgg16", num_classes=2)


@pytest.mark.parametrize("attention", ["se", "cbam"])
def test_checkpoint_with_attention_round_trips_and_is_checked(
    tmp_path: Path, attention: str
) -> None:
    torch.manual_seed(0)
    model = build_classifier("resnet10_small", num_classes=3, attention=attention).eval()
    path = tmp_path / "classifier.pt"
    _save(path, model, attention=attention)
    loaded, _ = load_checkpoint(path, architecture="resnet10_small", attention=attention)
    x = torch.rand(2, 1, 64, 64)
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))
    with pytest.raises(CheckpointError, match=f"attention '{attention}', but 'none'"):
        load_checkpoint(path, attention="none")


def _hidden_widths(model: torch.nn.Module) -> list[int]:
    blocks = [m for m in model.modules() if isinstance(m, SqueezeExcitation | CBAM)]
    return [block.mlp[0].out_channels for block in blocks]


@pytest.mark.parametrize("attention", ["se", "cbam"])
@pytest.mark.parametrize(
    ("widths", "expected"),
    [({}, [8, 8, 8, 8]), ({"reduction": 4, "min_hidden": 1}, [4, 8, 16, 32])],
)
def test_checkpoint_rebuilds_the_attention_widths(
    tmp_path: Path, attention: str, widths: dict, expected: list
) -> None:
    torch.manual_seed(0)
    model = build_classifier("resnet10_small", 3, attention=attention, **widths).eval()
    assert _hidden_widths(model) == expected
    path = tmp_path / "classifier.pt"
    _save(path, model, attention=attention, **widths)
    stored = torch.load(path, weights_only=True)["model_args"]
    assert stored == {
        "num_classes": 3,
        "in_channels": 1,
        "attention": attention,
        "reduction": widths.get("reduction", 16),
        "min_hidden": widths.get("min_hidden", 8),
    }
    loaded, _ = load_checkpoint(path, attention=attention)
    assert _hidden_widths(loaded) == expected
    x = torch.rand(2, 1, 64, 64)
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))


def test_saving_other_widths_than_the_models_is_refused(tmp_path: Path) -> None:
    model = build_classifier("resnet10_small", 3, attention="se", reduction=4)
    with pytest.raises(ValueError, match="reduction=4, min_hidden=8, but reduction=16"):
        _save(tmp_path / "classifier.pt", model, attention="se")
    assert not (tmp_path / "classifier.pt").exists()


@pytest.mark.parametrize("attention", ["se", "cbam"])
def test_attention_checkpoint_from_before_the_widths_is_refused(
    tmp_path: Path, attention: str
) -> None:
    path = tmp_path / "classifier.pt"
    _save(path, build_classifier("resnet10_small", 3, attention=attention), attention=attention)
    old = torch.load(path, weights_only=True)
    del old["model_args"]["reduction"], old["model_args"]["min_hidden"]
    torch.save(old, path)
    with pytest.raises(CheckpointError, match=r"older sibnet.*max\(1, C // 16\).*retrain it"):
        load_checkpoint(path, attention=attention)


def test_checkpoint_without_attention_ignores_the_widths(tmp_path: Path) -> None:
    path = tmp_path / "classifier.pt"
    _save(path, build_classifier("resnet10_small", 3), reduction=4, min_hidden=1)
    stored = torch.load(path, weights_only=True)["model_args"]
    assert stored == {"num_classes": 3, "in_channels": 1, "attention": "none"}
    load_checkpoint(path, attention="none")


@pytest.mark.parametrize(
    ("key", "value"), [("reduction", 0), ("min_hidden", 0), ("min_hidden", 2.5)]
)
def test_bad_attention_widths(key: str, value: object) -> None:
    with pytest.raises(ValueError, match=f"{key} must be an integer >= 1"):
        build_classifier("resnet10_small", 2, attention="cbam", **{key: value})


def test_unknown_attention() -> None:
    with pytest.raises(ValueError, match="unknown attention 'vit'"):
        build_classifier("resnet18", num_classes=2, attention="vit")
