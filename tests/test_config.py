from __future__ import annotations

from pathlib import Path

import pytest

from sibnet.config import (
    Params,
    ParamsError,
    load_params,
    validate_params,
)
from sibnet.objectives import SIBNET_FORMULATION, SibnetParams

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("path", [ROOT / "params.yaml", ROOT / "tests/workflow/params.yaml"])
def test_shipped_params_are_valid(path: Path) -> None:
    params = load_params(path)
    assert isinstance(params, Params)
    assert set(params.pipeline.methods) <= set(params.methods)


STUDY_KEYS = (
    "pipeline",
    "methods",
    "report",
    "prepare.dataset",
    "prepare.phantom.sites",
    "prepare.phantom.unlabeled_images",
)
"""What a study may change: which methods run over which seeds (and the reference they are
compared with), for the phantom-site study the dataset, and for the unlabeled-images study the
unlabeled images added to it. Training, evaluation, saliency, segmentation and the phantom
otherwise stay the shipped ones."""


def _without_study_keys(params: dict) -> dict:
    for key in STUDY_KEYS:
        *parents, last = key.split(".")
        node = params
        for part in parents:
            node = node[part]
        node.pop(last, None)  # a key left at its default may be left out of the dump
    return params


@pytest.mark.parametrize("study", sorted((ROOT / "studies").glob("*.yaml")), ids=lambda p: p.name)
def test_studies_are_the_shipped_params_but_for_their_study_keys(study: Path) -> None:
    """A study file is the default params with a few keys changed (kept from drifting)."""
    found = load_params(study).model_dump(mode="json")
    shipped = load_params(ROOT / "params.yaml").model_dump(mode="json")
    assert len(found["pipeline"]["seeds"]) >= 3  # a study gives seed-level verdicts
    for name, method in found["methods"].items():  # a shipped name keeps its meaning
        if name in shipped["methods"] and name in found["pipeline"]["methods"]:
            assert method == shipped["methods"][name], name
    assert _without_study_keys(found) == _without_study_keys(shipped)


@pytest.mark.parametrize(
    ("saliency", "message"),
    [({"layer": "layer 3"}, "saliency.layer"), ({"negligible": 1.5}, "saliency.negligible")],
)
def test_saliency_layer_and_negligible_are_checked(saliency: dict, message: str) -> None:
    with pytest.raises(ParamsError, match=message):
        validate_params({"saliency": saliency})


def test_defaults_equal_the_shipped_params_file() -> None:
    """params.yaml documents the defaults: it must spell out exactly the schema's defaults."""
    assert load_params(ROOT / "params.yaml") == Params()


@pytest.mark.parametrize(
    ("raw", "key", "hint"),
    [
        ({"train": {"epochs": 0}}, "train.epochs", "greater than or equal to 1"),
        ({"train": {"epochs": "ten"}}, "train.epochs", "valid integer"),
        ({"train": {"epoch": 3}}, "train.epoch", "unknown key"),
        ({"bogus": {}}, "bogus", "unknown section"),
        ({"prepare": {"phantom": {"mode": "multi"}}}, "prepare.phantom.mode", "'multiclass'"),
        ({"prepare": {"phantom": {"findings": ["tumour"]}}}, "prepare.phantom.findings", "nodule"),
        ({"prepare": {"split": {"val": 0.5, "test": 0.45}}}, "prepare.split", "val + test"),
        ({"prepare": {"dataset": "../escape"}}, "prepare.dataset", "pattern"),
        ({"evaluate": {"confidence": 1.5}}, "evaluate.confidence", "less than 1"),
        ({"pipeline": {"methods": ["vit"]}}, "(top level)", "methods table does not define"),
        ({"pipeline": {"seeds": [0, 0]}}, "pipeline.seeds", "must not repeat"),
        (
            {"methods": {"baseline": {"architecture": "vgg"}}},
            "methods.baseline.architecture",
            "resnet10_small",
        ),
        (
            {"prepare": {"phantom": {"shortcut_class": "tumour"}}},
            "prepare.phantom",
            "shortcut_class",
        ),
        ({"robustness": {"sigmas": [0.1, 0.1]}}, "robustness.sigmas", "must not repeat"),
        ({"robustness": {"sigmas": [-0.1]}}, "robustness.sigmas.0", "greater than or equal"),
        ({"robustness": {"sigmas": []}}, "robustness.sigmas", "at least 1"),
        ({"saliency": {"threshold": "median"}}, "saliency.threshold", "'top<k>%'"),
        ({"saliency": {"threshold": 1.5}}, "saliency.threshold", "must lie in [0, 1]"),
        ({"saliency": {"threshold": "top0%"}}, "saliency.threshold", "0 < k <= 100"),
        ({"report": {"reference": "vit"}}, "(top level)", "not one of pipeline.methods"),
        ({"prepare": {"dataset": "report"}}, "(top level)", "reserved"),
        ({"segment": {"modes": ["frozen", "frozen"]}}, "segment.modes", "must not repeat"),
        ({"segment": {"modes": ["linear_probe"]}}, "segment.modes.0", "'frozen'"),
        ({"segment": {"modes": []}}, "segment.modes", "at least 1"),
        ({"segment": {"max_train_images": 0}}, "segment.max_train_images", "greater than"),
    ],
)
def test_invalid_values_name_the_key(raw: dict, key: str, hint: str) -> None:
    with pytest.raises(ParamsError) as caught:
        validate_params(raw, source="p.yaml")
    message = str(caught.value)
    assert message.startswith("p.yaml: invalid parameters")
    assert f"- {key}:" in message
    assert hint in message


@pytest.mark.parametrize("threshold", ["otsu", 0.0, 0.5, 1.0, "top10%", "top2.5%", "top100%"])
def test_accepted_saliency_thresholds(threshold: str | float) -> None:
    assert validate_params({"saliency": {"threshold": threshold}}).saliency.threshold == threshold


def test_segment_modes_add_the_reference_modes_for_the_reference_only() -> None:
    from sibnet.config import segment_modes

    params = Params()
    assert segment_modes(params, "baseline") == ["frozen", "finetune", "scratch"]
    assert segment_modes(params, "sibnet") == ["frozen"]
    none = validate_params({"segment": {"reference": None, "reference_modes": []}})
    assert segment_modes(none, "baseline") == ["frozen"]


def test_the_segmentation_reference_is_its_own_key() -> None:
    """Choosing the report's comparison method changes nothing the segment stage reads."""
    from sibnet.dag import STAGES

    raw = {"segment": {"reference": "se", "reference_modes": ["scratch"]}}
    params = validate_params({**raw, "report": {"reference": "sibnet"}})
    assert params.segment.reference == "se"
    assert not any(key.startswith("report") for key in STAGES["segment"].params)
    with pytest.raises(ParamsError, match=r"segment\.reference = 'vit' is not one of"):
        validate_params({"segment": {"reference": "vit"}})
    with pytest.raises(ParamsError, match=r"needs segment\.reference"):
        validate_params({"segment": {"reference": None, "reference_modes": ["scratch"]}})
    assert validate_params(params.model_dump(mode="json")) == params  # a dump validates again


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
    with pytest.raises(ParamsError, match=r"unknown method 'vit'; params define \['baseline'"):
        Params().method("vit")


@pytest.mark.parametrize(
    ("method", "message"),
    [
        ({"lambda_cd": 1.0}, "apply only to objective 'sibnet'"),
        ({"objective": "sibnet", "lambda_cd": 0, "lambda_sc": 0}, "needs lambda_cd > 0"),
        ({"objective": "sibnet", "sc_kernel": 8}, "sc_kernel must be odd"),
        ({"attention": "transformer"}, "'none', 'se' or 'cbam'"),
        ({"attention_reduction": 8}, r"\['attention_reduction'\] apply only to attention"),
        (
            {"attention": "none", "attention_min_hidden": 8},
            r"\['attention_min_hidden'\] apply only to attention 'se' or 'cbam'",
        ),
        (
            {"attention_reduction": 16, "attention_min_hidden": 8},
            r"\['attention_min_hidden', 'attention_reduction'\]",
        ),
        ({"attention": "se", "attention_reduction": 0}, "greater than or equal to 1"),
        ({"attention": "cbam", "attention_min_hidden": 0}, "greater than or equal to 1"),
        ({"attention": "se", "attention_reduction": 2.0}, "valid integer"),
        ({"attention": "cbam", "attention_min_hidden": True}, "valid integer"),
        ({"attention": "cbam", "attention_min_hidden": "8"}, "valid integer"),
    ],
)
def test_method_checks(method: dict, message: str) -> None:
    with pytest.raises(ParamsError, match=message):
        validate_params({"methods": {"m": method}, "pipeline": {"methods": ["m"]}})


@pytest.mark.parametrize(
    ("method", "key"),
    [
        ({"attention": "se", "attention_reduction": 0}, "methods.m.attention_reduction"),
        ({"attention": "cbam", "attention_min_hidden": -1}, "methods.m.attention_min_hidden"),
        ({"attention": "none", "attention_reduction": 4}, "methods.m"),
    ],
)
def test_attention_width_errors_name_the_key(method: dict, key: str) -> None:
    with pytest.raises(ParamsError) as caught:
        validate_params({"methods": {"m": method}, "pipeline": {"methods": ["m"]}})
    message = str(caught.value)
    assert f"- {key}:" in message
    assert "attention_" in message


@pytest.mark.parametrize("attention", ["se", "cbam"])
def test_attention_widths_default_and_dump_round_trip(attention: str) -> None:
    raw = {"attention": attention, "attention_reduction": 4, "attention_min_hidden": 1}
    params = validate_params(
        {
            "methods": {"m": raw},
            "pipeline": {"methods": ["m"]},
            "report": {"reference": "m"},
            "segment": {"reference": "m"},
        }
    )
    method = params.methods["m"]
    assert (method.attention_reduction, method.attention_min_hidden) == (4, 1)
    dumped = params.model_dump(mode="json")
    assert dumped["methods"]["m"]["attention_reduction"] == 4
    assert dumped["methods"]["m"]["attention_min_hidden"] == 1
    assert validate_params(dumped) == params
    default = Params().methods[attention]
    assert (default.attention_reduction, default.attention_min_hidden) == (16, 8)


def test_default_methods_are_the_papers_comparison() -> None:
    params = Params()
    assert params.pipeline.methods == ["baseline", "se", "cbam", "sibnet", "sibnet_cd", "sibnet_sc"]
    sibnet = params.methods["sibnet"]  # the fidelity study's selection (README)
    assert (sibnet.lambda_cd, sibnet.lambda_sc) == (0.012, 0.009)
    assert sibnet == SibnetParams(**SIBNET_FORMULATION)
    assert params.methods["sibnet_cd"].lambda_sc == 0 and params.methods["sibnet_sc"].lambda_cd == 0
    dumped = params.model_dump(mode="json")
    assert "lambda_cd" not in dumped["methods"]["baseline"]
    for name in ("baseline", "sibnet", "sibnet_cd", "sibnet_sc"):  # attention: none
        assert "attention_reduction" not in dumped["methods"][name]
        assert "attention_min_hidden" not in dumped["methods"][name]
    for name in ("se", "cbam"):
        assert dumped["methods"][name]["attention_reduction"] == 16
        assert dumped["methods"][name]["attention_min_hidden"] == 8
    assert validate_params(dumped) == params


def _sibnet_method(**keys) -> dict:
    return {"methods": {"baseline": {}, "x": {"objective": "sibnet", **keys}}}


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (_sibnet_method(lambda_cd=0, lambda_sc=0), "lambda_faith > 0"),
        (_sibnet_method(sc_upsample="bilinear"), "sc_resolution"),
        (_sibnet_method(warmup_epochs=2), "needs a warm-up"),
        (_sibnet_method(warmup="ramp"), "warmup_epochs >= 1"),
        (
            {**_sibnet_method(warmup="delay", warmup_epochs=5), "train": {"epochs": 5}},
            "methods.x.warmup_epochs = 5 leaves no epoch",
        ),
        ({**_sibnet_method(lambda_faith=1.0), "train": {"processes": 2}}, "methods.x.lambda_faith"),
        (
            {
                **_sibnet_method(task_weighting="batch_inverse_frequency"),
                "train": {"class_weights": True},
            },
            "methods.x.task_weighting",
        ),
        (
            {
                **_sibnet_method(task_weighting="batch_inverse_frequency"),
                "prepare": {"phantom": {"mode": "multilabel"}},
            },
            "needs a multiclass task",
        ),
        (_sibnet_method(sc_regions="all"), "methods.x.sc_regions"),
        ({"methods": {"baseline": {"cam_relu": False}}}, "apply only to objective 'sibnet'"),
        ({"prepare": {"phantom": {"sites": "upper"}}}, "prepare.phantom.sites"),
    ],
)
def test_impossible_formulations_are_params_errors_naming_the_key(raw: dict, message: str) -> None:
    raw = {**raw, "pipeline": {"methods": ["baseline"]}}
    with pytest.raises(ParamsError, match=message):
        validate_params(raw)


def test_a_sibnet_method_dump_validates_again() -> None:
    raw = _sibnet_method(
        sc_resolution="input", sc_upsample="bilinear", warmup="ramp", warmup_epochs=1
    )
    params = validate_params({**raw, "pipeline": {"methods": ["baseline", "x"]}})
    assert validate_params(params.model_dump(mode="json")) == params
    layer = validate_params(
        {
            **_sibnet_method(),
            "pipeline": {"methods": ["x"]},
            "report": {"reference": "x"},
            "segment": {"reference": "x"},
        }
    )
    layer = layer.model_dump(mode="json")["methods"]["x"]
    assert "sc_upsample" not in layer and "cam_relu" in layer


def test_folder_mask_columns_dump_only_when_set() -> None:
    """Params without mask columns dump (and so hash) as before those keys existed; with them
    the dump validates again."""
    assert (
        "lesion_mask_columns"
        not in validate_params({}).model_dump(mode="json")["prepare"]["folder"]
    )
    raw = {
        "prepare": {
            "source": "folder",
            "folder": {
                "root": "/data",
                "classes": ["a", "b"],
                "lesion_mask_columns": {"a": "a_mask"},
                "organs": ["lung"],
                "organ_mask_columns": {"lung": "lung_mask"},
            },
        },
        "segment": {"structures": ["lung"]},
    }
    params = validate_params(raw)
    dumped = params.model_dump(mode="json")
    assert dumped["prepare"]["folder"]["organ_mask_columns"] == {"lung": "lung_mask"}
    assert validate_params(dumped) == params
    assert params.prepare.organs() == ["lung"]
