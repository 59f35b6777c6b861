"""A stage added from outside the package: one Stage entry, one module and its params section.

The toy extension lives in a temporary folder only: a module that registers its stage (with a
params class of its own) and a ``.dist-info`` that declares it under the ``sibnet.extensions``
entry points, as an installed distribution would. Nothing of the repository is edited, and the
stage must appear everywhere a stage appears: the command line, the params schema, ``dvc.yaml``,
the Snakemake DAG (a rule that really runs), and the audit's inputs.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from sibnet import dag, extensions
from sibnet.config import ParamsError, validate_params
from sibnet.registry import RegistryError
from tests.workflow.repo import clean_env, copy_repository, dry_run_rules, run

TOY_MODULE = '''
"""A toy extension stage: counts the prepared images, times a factor from its own section."""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from sibnet.config import Params
from sibnet.dag import PREPARED, RESULTS, Stage, register_stage
from sibnet.data.prepared import PreparedDataset
from sibnet.files import atomic_file


class ToyParams(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)
    scale: int = Field(1, ge=1)


{register}


def toy(params: Params, *, prepared: Path, summary: Path) -> None:
    dataset = PreparedDataset.open(prepared, verify=False)
    with atomic_file(summary) as tmp:
        tmp.write_text(json.dumps({{"images": len(dataset) * params.section("toy").scale}}))
'''

REGISTER = """register_stage(
    Stage(
        name="toy",
        help="count the prepared images (a toy extension stage)",
        inputs={"prepared": PREPARED},
        outputs={"summary": f"{RESULTS}/toy/summary.json"},
        params=("toy",),
        implementation="toy_stage",
        section=ToyParams,
    )
)"""


def _write_extension(folder: Path, *, register: bool = True) -> Path:
    """The toy module and the metadata of a distribution that declares it, in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    source = TOY_MODULE.format(register=REGISTER if register else "# (never registered)")
    (folder / "toy_stage.py").write_text(textwrap.dedent(source), encoding="utf-8")
    info = folder / "toy_stage-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: toy-stage\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[{extensions.GROUP}]\ntoy = toy_stage\n")
    return folder


def _forget(module: str = "toy_stage") -> None:
    """Undo what importing the extension registered in this process."""
    dag.STAGES.unregister("toy")
    extensions._loaded.pop("toy", None)
    sys.modules.pop(module, None)


@pytest.fixture
def extension(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    folder = _write_extension(tmp_path / "extension")
    monkeypatch.syspath_prepend(str(folder))
    importlib.invalidate_caches()
    yield folder
    _forget()


def test_the_extension_stage_is_everywhere_a_stage_is(extension: Path) -> None:
    from sibnet.cli import build_parser

    assert "toy" not in dag.STAGES
    assert extensions.load_extensions()["toy"] == "toy_stage"
    names = list(dag.STAGES)
    assert names.index("toy") < names.index("report") < names.index("audit")  # before gathering
    assert "toy" in dag.STAGES["audit"].gathered  # the audit covers its outputs
    assert "count the prepared images" in build_parser().format_help()
    document = yaml.safe_load(dag.dvc_yaml())
    toy = document["stages"]["toy"]
    assert toy["cmd"].startswith("sibnet toy --params params.yaml --prepared data/prepared/")
    assert toy["params"] == ["toy"]
    assert str(extension / "toy_stage.py") in toy["deps"]  # its own code is a dependency
    params = validate_params({"toy": {"scale": 3}})
    assert params.section("toy").scale == 3
    assert params.model_dump(mode="json")["toy"] == {"scale": 3}
    assert validate_params(params.model_dump(mode="json")) == params
    with pytest.raises(ParamsError, match=r"toy\.scal"):
        validate_params({"toy": {"scal": 3}})


def test_stages_are_registered_in_pipeline_order() -> None:
    """A stage that gathers nothing runs before the report; one that gathers some stages
    before the audit, which gathers every other stage and stays last."""
    module = "sibnet.stages.prepare"  # any module: these stages are never run
    plain = dag.Stage(
        "toy_plain", "x", {"prepared": dag.PREPARED}, {"o": "results/{dataset}/p"}, ()
    )
    plain = dataclasses.replace(plain, implementation=module)
    summary = dag.Stage(
        "toy_summary", "x", {"results": dag.RESULTS}, {"o": "results/s"}, (), gathers=("train",)
    )
    summary = dataclasses.replace(summary, implementation=module)
    try:
        dag.register_stage(summary)
        dag.register_stage(plain)
        names = dag.STAGES.names()
        assert names.index("toy_plain") < names.index("report")
        assert names.index("report") < names.index("toy_summary") < names.index("audit")
        assert names[-1] == "audit"
        assert {"toy_plain", "toy_summary"} <= set(dag.STAGES["audit"].gathered)
        with pytest.raises(RegistryError, match=r"stage 'toy_plain' is registered already"):
            dag.register_stage(dataclasses.replace(plain, help="another"))
        with pytest.raises(ValueError, match=r"gathers \['nothing'\]"):
            dag.register_stage(dataclasses.replace(summary, name="toy_bad", gathers=("nothing",)))
    finally:
        dag.STAGES.unregister("toy_plain")
        dag.STAGES.unregister("toy_summary")


def test_a_forgotten_registration_is_an_error_naming_the_registry(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = _write_extension(tmp_path / "extension", register=False)
    monkeypatch.syspath_prepend(str(folder))
    importlib.invalidate_caches()
    try:
        extensions.load_extensions()
        assert "toy" not in dag.STAGES
        with pytest.raises(ParamsError, match=r"toy: unknown section.*sibnet\.dag\.STAGES"):
            validate_params({"toy": {"scale": 3}})
        with pytest.raises(RegistryError, match=r"unknown stage 'toy'.*sibnet\.dag\.STAGES"):
            dag.stage("toy")
    finally:
        _forget()


def test_a_broken_extension_stops_with_its_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = _write_extension(tmp_path / "extension")
    (folder / "toy_stage.py").write_text("raise RuntimeError('half-written extension')\n")
    monkeypatch.syspath_prepend(str(folder))
    importlib.invalidate_caches()
    try:
        with pytest.raises(extensions.ExtensionError, match=r"'toy' \(toy_stage, from toy-stage"):
            extensions.load_extensions()
    finally:
        _forget()


@pytest.mark.slow
def test_snakemake_and_dvc_run_the_extension_stage(extension: Path, tmp_path: Path) -> None:
    copy = copy_repository(tmp_path / "repo")
    params = copy / "params.yaml"
    params.write_text(params.read_text() + "toy:\n  scale: 3\n")
    env = {**clean_env(), "PYTHONPATH": str(extension)}
    assert "toy" in run(["sibnet", "--help"], copy, env=env).stdout
    assert "toy" in dry_run_rules(copy, env=env)  # part of the default target, via the audit
    run(["snakemake", "--cores", "1", "results/tiny/toy/summary.json"], copy, env=env)
    summary = json.loads((copy / "results/tiny/toy/summary.json").read_text())
    images = yaml.safe_load((copy / "tests/workflow/params.yaml").read_text())
    assert summary == {"images": 3 * images["prepare"]["phantom"]["n_images"]}
    record = json.loads((copy / ".sibnet/lineage/toy/tiny.json").read_text())  # its lineage
    assert record["params"] == {"toy": {"scale": 3}}
    run(["sibnet", "dvc-yaml"], copy, env=env)
    listed = run(["dvc", "stage", "list"], copy, env=env).stdout
    assert any(line.split()[0] == "toy" for line in listed.splitlines() if line.strip())
