"""The conda environments for cluster users parse and pin what pyproject.toml pins."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]
ENVS = sorted((ROOT / "envs").glob("*.yaml"))


def _pyproject_requirements() -> dict[str, Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return {Requirement(line).name: Requirement(line) for line in project["dependencies"]}


def test_there_is_a_cpu_and_a_cuda_environment() -> None:
    assert {p.name for p in ENVS} == {"sibnet-cpu.yaml", "sibnet-cuda.yaml"}


@pytest.mark.parametrize("path", ENVS, ids=lambda p: p.name)
def test_environment_pins_agree_with_pyproject(path: Path) -> None:
    env = yaml.safe_load(path.read_text())
    assert env["name"] == path.stem
    conda = [d for d in env["dependencies"] if isinstance(d, str)]
    assert "python=3.11" in conda and "pip" in conda
    (pip_section,) = [d["pip"] for d in env["dependencies"] if isinstance(d, dict)]
    requirements = {
        Requirement(line).name: Requirement(line)
        for line in pip_section
        if not line.startswith("-")
    }
    expected = _pyproject_requirements()
    assert set(requirements) == set(expected), "same packages as pyproject.toml"
    for name, requirement in expected.items():
        assert requirements[name].specifier == requirement.specifier, name
    assert "--editable .." in pip_section, "installs sibnet itself from the repository"
