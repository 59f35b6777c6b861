"""The objective registry: an objective added from outside the repository (a module written to a
temporary folder) is validated, trained and reported with no file of the repository touched;
unknown and forgotten objectives fail naming the registry."""

from __future__ import annotations

import gc
import importlib
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pandas as pd
import pytest

from sibnet.config import Params, ParamsError, validate_params
from sibnet.losses import build_objective
from sibnet.objectives import (
    REGISTRY_NAME,
    ObjectiveParams,
    ObjectiveRegistryError,
    known_objectives,
    objective_spec,
    unregister_objective,
)
from tests.conftest import ROOT, train_into, with_changes

TOY = '''
"""A toy objective: the task loss plus an L2 penalty on the weights, reported as ``l2``."""

from __future__ import annotations

from typing import ClassVar, Literal

import torch
from pydantic import Field

from sibnet.losses import Objective, task_loss
from sibnet.objectives import ObjectiveParams, implements, register_objective


@register_objective
class ToyParams(ObjectiveParams):
    objective: Literal["toy"] = "toy"
    l2_weight: float = Field(1e-4, ge=0.0)

    terms: ClassVar[tuple[str, ...]] = ("task", "l2")


@implements(ToyParams)
class ToyObjective(Objective):
    def __init__(self, task: torch.nn.Module, weight: float) -> None:
        super().__init__()
        self.task, self.weight = task, weight

    @classmethod
    def from_params(cls, params, task, class_weights):
        return cls(task_loss(task, class_weights), params.l2_weight)

    @property
    def term_names(self) -> tuple[str, ...]:
        return ("task", "l2")

    def forward(self, model, batch):
        task = self.task(model(batch["image"]).float(), batch["target"])
        l2 = sum((p.float() ** 2).sum() for p in model.parameters())
        return task + self.weight * l2, {"task": task.detach(), "l2": l2.detach()}
'''

FORGOTTEN_PARAMS = """
from typing import Literal

from sibnet.objectives import ObjectiveParams


class ForgottenParams(ObjectiveParams):  # no @register_objective
    objective: Literal["forgotten"] = "forgotten"
"""

FORGOTTEN_IMPLEMENTATION = """
from typing import Literal

from sibnet.losses import Objective
from sibnet.objectives import ObjectiveParams, register_objective


@register_objective
class HalfParams(ObjectiveParams):
    objective: Literal["half"] = "half"


class HalfObjective(Objective):  # no @implements(HalfParams)
    pass
"""


def _import(folder: Path, name: str, source: str, monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    (folder / f"{name}.py").write_text(source, encoding="utf-8")
    monkeypatch.syspath_prepend(str(folder))
    return importlib.import_module(name)


@pytest.fixture
def extra_objectives(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[dict[str, ModuleType]]:
    """Objective modules imported from a temporary folder (outside the repository); the
    registry and ``sys.modules`` are restored afterwards."""
    assert not tmp_path.resolve().is_relative_to(ROOT)
    before = known_objectives()
    modules: dict[str, ModuleType] = {}
    sources = {"toy": TOY, "forgotten": FORGOTTEN_PARAMS, "half": FORGOTTEN_IMPLEMENTATION}
    for stem, source in sources.items():
        modules[stem] = _import(tmp_path, f"sibnet_test_{stem}_objective", source, monkeypatch)
    yield modules
    for name in ("toy", "half"):
        unregister_objective(name)
    for module in modules.values():
        sys.modules.pop(module.__name__, None)
    modules.clear()
    gc.collect()  # the test classes leave ObjectiveParams.__subclasses__()
    assert known_objectives() == before


def _only(method: dict) -> dict:
    return {
        "methods": {"m": method},
        "pipeline": {"methods": ["m"]},
        "report": {"reference": "m"},
        "segment": {"reference": "m"},
    }


def test_a_new_objective_validates_with_its_own_params_class(
    extra_objectives: dict[str, ModuleType],
) -> None:
    toy = extra_objectives["toy"]
    params = validate_params(_only({"objective": "toy", "l2_weight": 0.01}))
    method = params.methods["m"]
    assert type(method) is toy.ToyParams and method.l2_weight == 0.01
    assert method.model_dump(mode="json") == {
        "architecture": "resnet10_small",
        "attention": "none",
        "objective": "toy",
        "l2_weight": 0.01,
    }
    assert validate_params(params.model_dump(mode="json")) == params
    assert "toy" in known_objectives()
    with pytest.raises(ParamsError, match=r"\['l2_weight'\] apply only to objective 'toy'"):
        validate_params(_only({"l2_weight": 0.01}))  # cross_entropy
    with pytest.raises(ParamsError, match=r"\['lambda_cd'\] apply only to objective 'sibnet'"):
        validate_params(_only({"objective": "toy", "lambda_cd": 1.0}))
    with pytest.raises(ParamsError, match=r"methods\.m\.l2_weight"):
        validate_params(_only({"objective": "toy", "l2_weight": -1.0}))


def test_an_unknown_objective_is_a_params_error_listing_the_registry(
    extra_objectives: dict[str, ModuleType],
) -> None:
    with pytest.raises(ParamsError) as caught:
        validate_params(_only({"objective": "focal"}))
    message = str(caught.value)
    assert "methods.m: unknown objective 'focal'" in message
    assert f"the objective registry ({REGISTRY_NAME}) knows" in message
    assert "'cross_entropy'" in message and "'sibnet'" in message and "'toy'" in message


def test_forgotten_registrations_fail_naming_the_registry(
    extra_objectives: dict[str, ModuleType],
) -> None:
    with pytest.raises(ParamsError) as caught:
        validate_params(_only({"objective": "forgotten"}))
    message = str(caught.value)
    assert REGISTRY_NAME in message
    assert "ForgottenParams declares objective 'forgotten' but was never registered" in message
    half = validate_params(_only({"objective": "half"})).methods["m"]
    with pytest.raises(
        ObjectiveRegistryError, match=rf"no implementation in .*\({REGISTRY_NAME}\)"
    ):
        build_objective(half, "multiclass")


def test_the_base_params_class_is_not_a_method() -> None:
    with pytest.raises(TypeError, match="base of the objectives' params"):
        ObjectiveParams(objective="sibnet")
    assert type(ObjectiveParams.model_validate({"objective": "sibnet"})).__name__ == "SibnetParams"


@pytest.mark.parametrize("name", ["cross_entropy", "sibnet"])
def test_built_in_objectives_are_registered_whole(name: str) -> None:
    spec = objective_spec(name)
    assert spec.implementation is not None and spec.params.terms[0] == "task"
    objective = build_objective(spec.params(), "multiclass")
    assert set(objective.term_names) <= set(spec.params.terms)


def test_a_new_objective_trains_and_reports_its_terms(
    extra_objectives: dict[str, ModuleType],
    tiny_params: Params,
    prepared_tiny: Path,
    tmp_path: Path,
    mlflow_uri: str,
) -> None:
    """The toy's ``l2`` term reaches history.csv, MLflow and the checkpoint's ``terms``."""
    from mlflow.tracking import MlflowClient

    from sibnet.models.classifier import load_checkpoint

    params = with_changes(
        tiny_params,
        train={"epochs": 1},
        tracking={"experiment": "t-toy-objective"},
        methods={"toy": {"objective": "toy"}},
    )
    folder = train_into(params, prepared_tiny, tmp_path / "toy", "toy")
    history = pd.read_csv(folder / "history.csv")
    assert list(history.columns) == [
        "epoch",
        "train_loss",
        "train_task",
        "train_l2",
        "val_loss",
        "val_auc",
    ]
    assert history["train_l2"].notna().all() and (history["train_l2"] > 0).all()
    _, meta = load_checkpoint(folder / "classifier.pt")
    assert meta["extra"]["terms"] == ["task", "l2"]
    client = MlflowClient(tracking_uri=mlflow_uri)
    (run,) = client.search_runs([client.get_experiment_by_name("t-toy-objective").experiment_id])
    assert [m.step for m in client.get_metric_history(run.info.run_id, "train_l2")] == [1]
    assert run.data.params["method.objective"] == "toy"
