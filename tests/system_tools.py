"""System programs some tests need that a fresh machine with only Python may lack.

:func:`provide` makes a :class:`SystemTool` available or says why it cannot:

- already on ``PATH`` (``/usr/sbin`` and ``/sbin`` included): nothing to do;
- missing, and this machine can install it (root, ``apt-get`` present): the test installs the
  Debian packages itself, as ``.ci/run`` does;
- missing otherwise (not root, macOS, no ``apt-get``): the test is **skipped**, and the reason
  (shown in pytest's ``-ra`` summary) names the command that installs it.

``SIBNET_REQUIRE_SYSTEM_TOOLS=1`` (set by ``.ci/run``) turns every such skip into a failure, so
CI cannot go green without running these tests for real. The same applies to a tool that needs
root to run (the SLURM daemons): :func:`require_root`.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass

import pytest

__all__ = [
    "GIT",
    "REQUIRE",
    "SLURM",
    "SystemTool",
    "missing",
    "provide",
    "require_root",
    "unavailable",
]

REQUIRE = "SIBNET_REQUIRE_SYSTEM_TOOLS"
"""Environment variable: ``1`` makes an unavailable tool fail the test instead of skipping it."""


@dataclass(frozen=True)
class SystemTool:
    """Programs a group of tests runs, and the Debian packages that provide them.

    Attributes:
        name: what the tests use it for, in skip reasons.
        binaries: programs that must all be found.
        packages: Debian packages that install them.
    """

    name: str
    binaries: tuple[str, ...]
    packages: tuple[str, ...]

    @property
    def install(self) -> str:
        """The shell command that installs the packages (as root)."""
        return "apt-get update && apt-get install -y " + " ".join(self.packages)


GIT = SystemTool(
    "git (the workflow tests copy the repository into git work trees)", ("git",), ("git",)
)
SLURM = SystemTool(
    "SLURM and munge (the one-node cluster of tests/workflow/test_slurm.py)",
    ("slurmctld", "slurmd", "sbatch", "squeue", "sinfo", "scancel", "munged", "munge"),
    ("slurmctld", "slurmd", "slurm-client", "munge"),
)


def _search_path() -> str:
    return os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])


def missing(tool: SystemTool) -> list[str]:
    """The binaries of ``tool`` not found on ``PATH`` (nor in ``/usr/sbin``, ``/sbin``)."""
    return [b for b in tool.binaries if shutil.which(b, path=_search_path()) is None]


def _is_root() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0


def _can_install() -> bool:
    """Root on a machine with apt-get (Debian, Ubuntu)."""
    return _is_root() and shutil.which("apt-get", path=_search_path()) is not None


def unavailable(reason: str) -> None:
    """Skip the test with ``reason``, or fail it when :data:`REQUIRE` is set."""
    if os.environ.get(REQUIRE) == "1":
        pytest.fail(f"{reason}\n({REQUIRE}=1: these tests must run here, not be skipped)")
    pytest.skip(reason)


def provide(tool: SystemTool) -> None:
    """Make ``tool``'s binaries available: found, installed with apt-get (root), or the test is
    skipped (failed under :data:`REQUIRE`) with the command that installs them."""
    absent = missing(tool)
    if not absent:
        return
    if not _can_install():
        where = "as root on Debian/Ubuntu" if sys.platform.startswith("linux") else "on Linux"
        unavailable(
            f"{tool.name}: {', '.join(absent)} not found. Install them {where} with "
            f"`sudo sh -c '{tool.install}'` and rerun (see README, 'Tests')"
        )
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    done = subprocess.run(["bash", "-c", tool.install], env=env, capture_output=True, text=True)
    if done.returncode != 0 or missing(tool):
        pytest.fail(
            f"`{tool.install}` did not provide {', '.join(missing(tool)) or tool.name} "
            f"(exit {done.returncode}):\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}"
        )


def require_root(what: str, command: str) -> None:
    """Skip (fail under :data:`REQUIRE`) unless root, naming ``command`` to run instead."""
    if not _is_root():
        unavailable(f"{what} needs root: run `{command}`")
