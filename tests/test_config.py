from __future__ import annotations

from pathlib import Path

import pytest

from sibnet.config import Params, ParamsError, load_params, validate_params

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("path", [ROOT / "params.yaml", ROOT / "tests/workflow/params.yaml"])
def test_shipped_params_are_valid(path: Path) -> None:
    params = load_params(path)
    assert isinstance(params, Params)
    assert set(params.pipeline.methods) <= set(params.methods)


def test_defaults_equal_the_shipped_params_file() -> None:
    """params.yaml documents the defaults: it must spell out exactly the schema's defaults."""
    assert load_params(ROOT / "params.yaml") == Params()


@pytest.mark.parametrize(
    ("raw", "key", "hint"),
    [
        ({"train": {"epochs": 0}}, "train.epochs", "greater than or equal to 1"),
        ({"train": {"epochs": "ten"}}, "train.epochs", "valid integer"),
        ({"train": {"epoch": 3}}, "train.epoch", "unknown key"),
        ({"bogus": {}}, "bogus", "unknown key"),
        ({"prepare": {"phantom": {"mode": "multi"}}}, "prepare.phantom.mode", "'multiclass'"),
        ({"prepare": {"phantom": {"findings": ["tumour"]}}}, "prepare.phantom.findings", "nodule"),
        ({"prepare": {"split": {"val": 0.5, "test": 0.45}}}, "prepare.split", "val + test"),
        ({"prepare": {"dataset": "../escape"}}, "prepare.dataset", "pattern"),
        ({"evaluate": {"confidence": 1.5}}, "evaluate.confidence", "less than 1"),
        ({"pipeline": {"methods": ["se"]}}, "(top level)", "methods table does not define"),
        ({"pipeline": {"seeds": [0, 0]}}, "pipeline.seeds", "must not repeat"),
        (
            {"methods": {"baseline": {"architecture": "vgg"}}},
            "methods.baseline.architecture",
            "resnet10_small",
        ),
        (
            {"prepare": {"phantom": {"shortcut_class": "tumour"}}},
            "(top level)",
            "shortcut_class",
        ),
    ],
)
def test_invalid_values_name_the_key(raw: dict, key: str, hint: str) -> None:
    with pytest.raises(ParamsError) as caught:
        validate_params(raw, source="p.yaml")
    message = str(caught.value)
    assert message.startswith("p.yaml: invalid parameters")
    assert f"- {key}:" in message
    assert hint in message


def test_all_problems_are_reported_together() -> None:
    with pytest.raises(ParamsError) as caught:
        validate_params({"train": {"epochs": 0, "batch_size": -1, "typo": 1}})
    assert "3 problem(s)" in str(caught.value)


def test_scientific_notation_reads_as_a_float(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text("train:\n  learning_rate: 1e-4\n  weight_decay: 5E-5\n")
    params = load_params(path)
    assert params.train.learning_rate == pytest.approx(1e-4)
    assert params.train.weight_decay == pytest.approx(5e-5)


def test_missing_and_malformed_files(tmp_path: Path) -> None:
    with pytest.raises(ParamsError, match="params file not found"):
        load_params(tmp_path / "absent.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [unclosed\n")
    with pytest.raises(ParamsError, match="not valid YAML"):
        load_params(bad)
    listed = tmp_path / "list.yaml"
    listed.write_text("- 1\n- 2\n")
    with pytest.raises(ParamsError, match="expected a mapping"):
        load_params(listed)


def test_unknown_method_lookup_lists_the_defined_ones() -> None:
    with pytest.raises(ParamsError, match=r"unknown method 'se'.*\['baseline'\]"):
        Params().method("se")
