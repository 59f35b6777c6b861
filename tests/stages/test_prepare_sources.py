"""A new dataset source is one module: it registers itself, and ``sibnet prepare`` prepares it
with no other file touched; an unknown or half-registered source fails naming the registry."""

from __future__ import annotations

import importlib
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from sibnet.config import ParamsError, validate_params
from sibnet.data.prepared import PreparedDataset
from sibnet.data.sources import SOURCES, SourceError
from sibnet.stages.prepare import prepare

TOY = '''
"""A toy source: ``prepare.toy.n`` random images, two classes."""

from __future__ import annotations

import numpy as np
from pydantic import Field

from sibnet.data.plan import Batch, Plan
from sibnet.data.sources import Adapter, SourceParams, register_adapter


class ToyParams(SourceParams):
    n: int = Field(12, ge=6)
    seed: int = 0


def plan_toy(prepare) -> Plan:
    options = prepare.toy
    size = prepare.size

    def batches():
        rng = np.random.default_rng(options.seed)
        ids = [f"toy-{i:03d}" for i in range(options.n)]
        labels = np.eye(2, dtype=np.int8)[np.arange(options.n) % 2]
        splits = ["train", "val", "test"] * (options.n // 3)
        yield Batch(
            images=rng.random((options.n, 1, size, size)),
            labels=labels,
            ids=ids,
            splits=splits,
            patient_ids=ids,
            sources=[f"toy:{i}" for i in ids],
        )

    return Plan(
        name=prepare.dataset,
        task="multiclass",
        classes=["even", "odd"],
        organs=[],
        source={"adapter": "toy", **options.model_dump(mode="json")},
        batches=batches,
        image_size=(size, size),
    )
'''


@pytest.fixture
def source_module(tmp_path: Path) -> Iterator[Callable[[str, str], None]]:
    """Write a module to ``tmp_path`` on ``sys.path`` and import it; unregister and forget it
    afterwards."""
    names: list[str] = []

    def load(name: str, text: str) -> None:
        (tmp_path / f"{name}.py").write_text(textwrap.dedent(text), encoding="utf-8")
        names.append(name)
        importlib.import_module(name)

    sys.path.insert(0, str(tmp_path))
    try:
        yield load
    finally:
        sys.path.remove(str(tmp_path))
        for name in names:
            sys.modules.pop(name, None)
        SOURCES.unregister("toy")


def _params(tmp_path: Path, **toy: object):
    return validate_params(
        {
            "prepare": {"source": "toy", "dataset": "toy", "size": 16, "toy": toy},
            "segment": {"structures": []},
            "tracking": {"enabled": False},
        }
    )


def test_a_source_registered_from_its_own_module_is_prepared(source_module, tmp_path: Path) -> None:
    repository = Path(__file__).resolve().parents[2]
    before = {p: p.stat().st_mtime_ns for p in (repository / "src").rglob("*.py")}
    source_module(
        "sibnet_toy_source", TOY + '\n\nregister_adapter("toy", Adapter(ToyParams, plan_toy))\n'
    )
    assert SOURCES.names()[-1] == "toy"
    params = _params(tmp_path, n=12)
    assert params.prepare.toy.n == 12 and params.prepare.task() is None
    assert params.prepare.organs() == []
    assert list(params.prepare.model_dump())[:7] == [
        "dataset",
        "source",
        "phantom",
        "chexpert",
        "medmnist",
        "folder",
        "toy",
    ]
    assert validate_params(params.model_dump(mode="json")) == params
    # Selected elsewhere, the new source's section is not dumped: installing a source changes
    # no other run's params (hashes, rerun decisions).
    phantom = validate_params({"prepare": {"toy": {"n": 12}}})
    assert "toy" not in phantom.prepare.model_dump() and phantom.prepare.section("toy").n == 12
    assert phantom.model_dump(mode="json") == validate_params({}).model_dump(mode="json")
    out = tmp_path / "prepared" / "toy"
    dataset = prepare(params, prepared=out)
    assert len(dataset) == 12 and dataset.classes == ["even", "odd"]
    assert dataset.meta["split_counts"] == {"train": 4, "val": 4, "test": 4}
    assert dataset.meta["source"] == {"adapter": "toy", "n": 12, "seed": 0}
    PreparedDataset.open(out, verify=True)
    with pytest.raises(ParamsError, match=r"prepare\.toy\.n: Input should be greater"):
        _params(tmp_path, n=2)
    after = {p: p.stat().st_mtime_ns for p in (repository / "src").rglob("*.py")}
    assert after == before, "adding a source touched a file of the repository"


def test_an_unknown_source_names_the_registry_and_the_known_sources(tmp_path: Path) -> None:
    with pytest.raises(ParamsError) as caught:
        _params(tmp_path)
    message = str(caught.value)
    assert "prepare.source: unknown source 'toy'" in message
    assert "sibnet.data.sources.SOURCES" in message
    assert "['phantom', 'chexpert', 'medmnist', 'folder']" in message
    with pytest.raises(SourceError, match=r"sibnet\.data\.sources\.SOURCES.*'phantom'"):
        SOURCES.adapter("toy")


def test_a_module_that_forgets_to_register_fails_loudly(source_module, tmp_path: Path) -> None:
    source_module("sibnet_toy_unregistered", TOY)  # defines the source, registers nothing
    with pytest.raises(ParamsError, match=r"unknown source 'toy'.*sibnet\.data\.sources\.SOURCES"):
        _params(tmp_path)


def test_a_source_with_params_but_no_adapter_fails_before_the_run(
    source_module, tmp_path: Path
) -> None:
    registers = (
        '\nfrom sibnet.data.sources import register_source\n\nregister_source("toy", ToyParams)\n'
    )
    source_module("sibnet_toy_params_only", TOY + registers)
    params = _params(tmp_path)
    with pytest.raises(SourceError, match=r"no adapter in the source registry \(sibnet\.data"):
        prepare(params, prepared=tmp_path / "out")
    assert not (tmp_path / "out").exists()
