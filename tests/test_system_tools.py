"""tests/system_tools.py: a missing system program is provided, or skipped with its install
command, or (under SIBNET_REQUIRE_SYSTEM_TOOLS=1) fails the test."""

from __future__ import annotations

import pytest

from tests import system_tools
from tests.system_tools import REQUIRE, SystemTool, provide, require_root

ABSENT = SystemTool("a tool", ("sibnet-no-such-program",), ("sibnet-no-such-package",))
PRESENT = SystemTool("python", ("sh",), ("dash",))


def _not_root(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(system_tools, "_is_root", lambda: False)


def test_a_present_tool_needs_nothing() -> None:
    assert system_tools.missing(PRESENT) == []
    provide(PRESENT)


def test_a_missing_tool_is_skipped_with_its_install_command(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _not_root(monkeypatch)
    monkeypatch.delenv(REQUIRE, raising=False)
    with pytest.raises(pytest.skip.Exception) as skipped:
        provide(ABSENT)
    reason = str(skipped.value)
    assert "sibnet-no-such-program not found" in reason
    assert "apt-get update && apt-get install -y sibnet-no-such-package" in reason


def test_under_require_a_missing_tool_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    _not_root(monkeypatch)
    monkeypatch.setenv(REQUIRE, "1")
    with pytest.raises(pytest.fail.Exception, match="must run here"):
        provide(ABSENT)
    with pytest.raises(pytest.fail.Exception, match="needs root: run `sudo x`"):
        require_root("the cluster", "sudo x")


def test_root_with_apt_installs_and_fails_when_that_does_not_help(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """As root with apt-get the tool is installed (here: a command standing in for apt-get),
    and a failed install is a test failure, not a skip."""
    monkeypatch.setattr(system_tools, "_can_install", lambda: True)
    monkeypatch.delenv(REQUIRE, raising=False)
    ran: list[str] = []
    monkeypatch.setattr(
        SystemTool, "install", property(lambda self: ran.append(self.name) or "true")
    )
    with pytest.raises(pytest.fail.Exception, match="did not provide sibnet-no-such-program"):
        provide(ABSENT)
    assert ran, "the install command ran"


def test_not_root_skips_naming_the_command(monkeypatch: pytest.MonkeyPatch) -> None:
    _not_root(monkeypatch)
    monkeypatch.delenv(REQUIRE, raising=False)
    with pytest.raises(pytest.skip.Exception, match="needs root: run `sudo -E python3"):
        require_root("the cluster", "sudo -E python3 -m pytest tests/workflow/test_slurm.py")
