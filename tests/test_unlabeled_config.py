"""A method's ``unlabeled`` keys: what is accepted, what is refused before any work, and that a
method ignoring unlabeled images dumps (and hashes) as before the keys existed."""

from __future__ import annotations

import pytest

from sibnet.config import ParamsError, validate_params
from sibnet.models.classifier import params_hash
from sibnet.objectives import (
    CrossEntropyParams,
    EntropyMinimizationParams,
    ObjectiveParams,
    SibnetParams,
)

PLUS = {"objective": "sibnet", "lambda_cd": 0.012, "lambda_sc": 0.009, "unlabeled": "use"}


def _params(methods: dict, unlabeled_images: int = 0) -> dict:
    return {
        "prepare": {"phantom": {"unlabeled_images": unlabeled_images}},
        "methods": {"baseline": {"objective": "cross_entropy"}, **methods},
        "pipeline": {"methods": ["baseline", *methods]},
    }


def test_ignoring_methods_dump_as_before() -> None:
    dumped = SibnetParams(lambda_cd=0.012).model_dump(mode="json")
    assert "unlabeled" not in dumped and "unlabeled_ratio" not in dumped
    assert "unlabeled" not in CrossEntropyParams().model_dump(mode="json")
    assert params_hash(SibnetParams(lambda_cd=0.012).model_dump(mode="json")) == params_hash(
        SibnetParams(lambda_cd=0.012, unlabeled="ignore").model_dump(mode="json")
    )


def test_use_and_oracle_are_dumped_and_validate_again() -> None:
    plus = ObjectiveParams.model_validate({**PLUS, "unlabeled_ratio": 1.0})
    dumped = plus.model_dump(mode="json")
    assert list(dumped)[-2:] == ["unlabeled", "unlabeled_ratio"]
    assert dumped["unlabeled_ratio"] == 1.0
    assert ObjectiveParams.model_validate(dumped) == plus
    oracle = CrossEntropyParams(unlabeled="oracle").model_dump(mode="json")
    assert oracle["unlabeled"] == "oracle" and "unlabeled_ratio" not in oracle


@pytest.mark.parametrize(
    ("method", "message"),
    [
        ({"objective": "cross_entropy", "unlabeled": "use"}, "objective 'cross_entropy' has none"),
        ({**PLUS, "unlabeled": "ignore", "unlabeled_ratio": 0.5}, "apply only to unlabeled: use"),
        ({**PLUS, "lambda_cd": 0.0, "lambda_sc": 0.0, "lambda_faith": 1.0}, "faithfulness needs"),
        ({"objective": "entropy_minimization"}, "set unlabeled: use"),
        ({**PLUS, "unlabeled_ratio": 0.0}, "greater than 0"),
        ({**PLUS, "unlabeled": "sometimes"}, "'ignore', 'use' or 'oracle'"),
    ],
)
def test_bad_unlabeled_keys_are_refused(method: dict, message: str) -> None:
    with pytest.raises(ParamsError, match=message):
        validate_params(_params({"m": method}, unlabeled_images=8))


def test_entropy_minimization_lists_itself_among_the_objectives_that_can() -> None:
    with pytest.raises(ParamsError, match=r"\['entropy_minimization', 'sibnet'\]"):
        validate_params(_params({"m": {"objective": "cross_entropy", "unlabeled": "use"}}))


@pytest.mark.parametrize("usage", ["use", "oracle"])
def test_a_method_asking_for_unlabeled_images_on_a_dataset_without_is_refused(usage: str) -> None:
    method = PLUS if usage == "use" else {"objective": "cross_entropy", "unlabeled": "oracle"}
    with pytest.raises(ParamsError, match=rf"methods.m.unlabeled = '{usage}'.*yields none"):
        validate_params(_params({"m": method}))


def test_unlabeled_methods_validate_on_a_dataset_with_unlabeled_images() -> None:
    params = validate_params(
        _params(
            {
                "plus": PLUS,
                "entropy": {"objective": "entropy_minimization", "unlabeled": "use"},
                "all_labeled": {"objective": "cross_entropy", "unlabeled": "oracle"},
            },
            unlabeled_images=8,
        )
    )
    assert isinstance(params.methods["entropy"], EntropyMinimizationParams)
    assert params.methods["all_labeled"].unlabeled == "oracle"


def test_a_method_outside_the_pipeline_is_checked_when_it_trains() -> None:
    # the table may define it (e.g. for `sibnet train --method`); the train stage refuses it
    raw = _params({})
    raw["methods"]["plus"] = PLUS
    assert validate_params(raw).methods["plus"].unlabeled == "use"
