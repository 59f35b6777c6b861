"""sibnet.imports: every stage depends on exactly the package modules it can run."""

from __future__ import annotations

import pytest

from sibnet.dag import ENTRY, STAGES, stage
from sibnet.imports import (
    DynamicImportError,
    import_closure,
    imports_in_source,
    imports_of,
    module_file,
)
from tests.conftest import ROOT

LAZY = """
import os
from sibnet.config import load_params
from . import files
from .data import prepared as p
from ..outer import thing
import importlib


def later():
    from sibnet.metrics.saliency import check_threshold
    import sibnet.plots.report
    return importlib.import_module("sibnet.stages.audit")
"""


def test_imports_anywhere_in_the_file_are_found() -> None:
    found = imports_in_source(LAZY, "sibnet.pkg.mod")
    assert {
        "os",
        "sibnet.config",
        "sibnet.config.load_params",
        "sibnet.pkg",
        "sibnet.pkg.files",
        "sibnet.pkg.data",
        "sibnet.pkg.data.prepared",
        "sibnet.outer",
        "sibnet.outer.thing",
        "sibnet.metrics.saliency",  # lazy, inside a function
        "sibnet.plots.report",
        "sibnet.stages.audit",  # importlib with a literal name
    } <= found
    # in a package's __init__, "." is the package itself
    assert "sibnet.pkg.files" in imports_in_source(
        "from . import files", "sibnet.pkg", is_package=True
    )


def test_a_computed_import_name_is_an_error_outside_the_command_line() -> None:
    source = "import importlib\nname = 'x'\nimportlib.import_module(f'sibnet.{name}')\n"
    with pytest.raises(DynamicImportError, match="<source>:3: import_module with a computed"):
        imports_in_source(source, "sibnet.somewhere")
    imports_in_source(source, "sibnet.cli")  # the stage module, a root of every closure


def test_every_package_module_can_be_followed() -> None:
    """No module of the package imports by a computed name (but the command line), so every
    closure is complete."""
    package = ROOT / "src" / "sibnet"
    for path in sorted(package.rglob("*.py")):
        parts = path.relative_to(package.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        assert module_file(name) == path
        imports_of(name)


def test_lazy_and_importlib_imports_are_in_the_closures() -> None:
    """Imports inside functions are followed: the command line imports sibnet.launch,
    lineage and tracking in its functions, the params schema imports the saliency metrics in a
    validator, and the command line imports the stage module through importlib."""
    closure = import_closure([ENTRY])
    for name in ("sibnet.launch", "sibnet.lineage", "sibnet.tracking", "sibnet.invocation"):
        assert name in closure
    assert "sibnet.metrics.saliency" in closure  # config's lazy import
    assert "sibnet.stages.train" not in closure  # computed: each stage adds its own
    assert "sibnet.plots.runs" in import_closure(["sibnet.stages.train"])  # lazy, tracking on


def test_each_stage_depends_on_its_closure_as_repository_files() -> None:
    for spec in STAGES.values():
        code = spec.code
        assert list(code) == sorted(set(code))
        assert "src/sibnet/cli.py" in code and f"src/sibnet/stages/{spec.name}.py" in code
        assert all((ROOT / path).is_file() for path in code), spec.name
        others = {f"src/sibnet/stages/{n}.py" for n in STAGES if n != spec.name}
        assert not others & set(code), f"{spec.name} runs another stage's module"


def test_report_only_modules_are_the_report_stages_alone() -> None:
    """The report's sections, figures and comparisons are in no other stage's code; the losses
    are in train's, not in prepare's."""
    sections = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "src/sibnet/report").rglob("*.py"))
    assert "src/sibnet/report/sections/saliency.py" in sections
    for path in ("src/sibnet/plots/report.py", "src/sibnet/metrics/comparison.py", *sections):
        users = {name for name, spec in STAGES.items() if path in spec.code}
        assert users == {"report"}, (path, users)
    losses = {name for name, spec in STAGES.items() if "src/sibnet/losses/sibnet.py" in spec.code}
    assert "train" in losses and "prepare" not in losses and "audit" not in losses
    assert "src/sibnet/plots/runs.py" in stage("train").code


@pytest.mark.parametrize(
    ("stage_name", "absent"),
    [
        ("prepare", ("torch", "monai", "mlflow", "matplotlib")),
        ("report", ("torch", "monai", "mlflow")),
        ("audit", ("torch", "monai", "mlflow", "matplotlib", "pandas", "scipy")),
    ],
)
def test_stages_without_networks_import_no_network_libraries(
    stage_name: str, absent: tuple[str, ...]
) -> None:
    """Start-up cost (benchmarks/startup.py): what a job imports before its work. PyTorch and
    MONAI only where a network runs, MLflow only once a tracked run opens."""
    import subprocess
    import sys

    code = (
        f"import sys, sibnet.cli, sibnet.stages.{stage_name}\n"
        f"print(sorted({{m.split('.')[0] for m in sys.modules}} & {set(absent)!r}))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]", f"{stage_name} imports {done.stdout.strip()}"
