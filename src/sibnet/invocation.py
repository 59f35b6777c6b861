"""Which pipeline invocation a stage's job belongs to: one ``snakemake`` or ``dvc repro`` run.

Every MLflow run of a stage is tagged ``sibnet.invocation`` (and ``sibnet.engine``), and every
lineage record holds the same, so one invocation's runs can be filtered together in the MLflow
UI (``tags."sibnet.invocation" = '<id>'``) and the audit names the invocations it covers.

The invocation is found, in this order:

1. ``SIBNET_INVOCATION`` (and ``SIBNET_ENGINE``) in the environment. The Snakefile sets them
   once per ``snakemake`` run, so jobs on a cluster (which inherit the submitting environment)
   carry them too; set them yourself to group runs by hand.
2. The nearest ancestor process that is ``snakemake`` or ``dvc`` (Linux, through ``/proc``):
   ``dvc repro`` offers its stages no identifier of its own, so its process is the invocation.
3. Otherwise the stage was run by hand: it is an invocation of its own (engine ``none``).

An id reads ``<engine>-<UTC start of that process>-<host>-<pid>``, e.g.
``dvc-20261202T035635Z-node1-41822``.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

__all__ = ["ENGINES", "ENV_ENGINE", "ENV_ID", "Invocation", "current", "invocation_id"]

ENV_ID = "SIBNET_INVOCATION"
ENV_ENGINE = "SIBNET_ENGINE"
ENGINES = ("snakemake", "dvc")
"""Workflow engines recognised among the ancestor processes."""

_PROC = Path("/proc")


@dataclass(frozen=True)
class Invocation:
    """One pipeline invocation.

    Attributes:
        id: the invocation id (see the module docstring).
        engine: ``snakemake``, ``dvc``, ``none`` (a stage run by hand), or what
            ``SIBNET_ENGINE`` says.
    """

    id: str
    engine: str

    def tags(self) -> dict[str, str]:
        """The MLflow tags of a run of this invocation."""
        return {"sibnet.invocation": self.id, "sibnet.engine": self.engine}

    def record(self) -> dict[str, str]:
        """The lineage record's ``invocation`` entry."""
        return {"id": self.id, "engine": self.engine}


def invocation_id(engine: str, pid: int, started: float) -> str:
    """The id of an invocation by process ``pid`` of ``engine``, started at epoch ``started``."""
    stamp = datetime.fromtimestamp(started, UTC).strftime("%Y%m%dT%H%M%SZ")
    return f"{engine}-{stamp}-{socket.gethostname().split('.')[0]}-{pid}"


def _stat(pid: int) -> tuple[int, float] | None:
    """``(parent pid, start time as epoch seconds)`` of process ``pid`` from ``/proc``."""
    try:
        fields = (_PROC / str(pid) / "stat").read_text().rpartition(")")[2].split()
        boot = next(
            float(line.split()[1])
            for line in (_PROC / "stat").read_text().splitlines()
            if line.startswith("btime ")
        )
    except (OSError, StopIteration, IndexError, ValueError):
        return None
    return int(fields[1]), boot + int(fields[19]) / os.sysconf("SC_CLK_TCK")


def _engine_of(pid: int) -> str | None:
    """``snakemake`` or ``dvc`` if process ``pid`` runs one (``dvc ...``, ``python .../dvc ...``
    or ``python -m dvc ...``), else ``None``."""
    try:
        argv = (_PROC / str(pid) / "cmdline").read_bytes().split(b"\0")
    except OSError:
        return None
    names = [os.path.basename(a.decode(errors="replace")) for a in argv[:3]]
    for name in names:
        if name in ENGINES:
            return name
    return None


def _engine_ancestor() -> Invocation | None:
    """The invocation of the nearest ``snakemake``/``dvc`` ancestor of this process."""
    stat = _stat(os.getpid())
    for _ in range(64):  # bounded: a process tree is never this deep
        if stat is None or stat[0] <= 1:
            return None
        pid = stat[0]
        stat = _stat(pid)
        engine = _engine_of(pid)
        if engine is not None and stat is not None:
            return Invocation(invocation_id(engine, pid, stat[1]), engine)
    return None


def current() -> Invocation:
    """The invocation this process belongs to (see the module docstring)."""
    value = os.environ.get(ENV_ID, "").strip()
    if value:
        return Invocation(value, os.environ.get(ENV_ENGINE, "").strip() or "environment")
    found = _engine_ancestor()
    if found is not None:
        return found
    own = _stat(os.getpid())
    started = own[1] if own is not None else datetime.now(UTC).timestamp()
    return Invocation(invocation_id("none", os.getpid(), started), "none")
