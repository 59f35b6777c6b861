"""Starting data-parallel processes: where this process stands under ``torchrun``, and the
``torchrun`` command that runs ``sibnet train`` in N processes (see :mod:`sibnet.distributed`).

Reads only the environment, so the ``sibnet`` command can ask before importing PyTorch.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from collections.abc import Sequence

__all__ = [
    "launch",
    "launch_command",
    "needs_launch",
    "rank_from_env",
    "under_torchrun",
    "world_from_env",
]

log = logging.getLogger(__name__)


def rank_from_env() -> int:
    """This process's rank as ``torchrun`` set it (``RANK``), 0 outside ``torchrun``."""
    return int(os.environ.get("RANK", "0"))


def world_from_env() -> int | None:
    """``WORLD_SIZE`` under ``torchrun`` (which also sets ``LOCAL_RANK``), else ``None``."""
    if "LOCAL_RANK" in os.environ and "WORLD_SIZE" in os.environ:
        return int(os.environ["WORLD_SIZE"])
    return None


def under_torchrun() -> bool:
    """Whether ``torchrun`` started this process."""
    return world_from_env() is not None


def needs_launch(processes: int) -> bool:
    """More than one process is asked for and this process was not started by ``torchrun``."""
    return processes > 1 and not under_torchrun()


def launch_command(argv: Sequence[str], processes: int) -> list[str]:
    """The ``torchrun`` command that runs ``sibnet <argv>`` in ``processes`` processes."""
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nnodes",
        "1",
        "--nproc-per-node",
        str(processes),
        "-m",
        "sibnet.cli",
        *argv,
    ]


def launch(argv: Sequence[str], processes: int, threads: int) -> int:
    """Run ``sibnet <argv>`` under ``torchrun`` in ``processes`` processes; their exit status.

    ``threads``: intra-op threads per process, also passed as ``OMP_NUM_THREADS`` (``torchrun``
    would otherwise set 1 and say so).
    """
    command = launch_command(argv, processes)
    log.info("%d training processes: %s", processes, " ".join(command))
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", str(threads))}
    return subprocess.run(command, env=env, check=False).returncode
