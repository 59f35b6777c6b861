"""A one-node SLURM cluster on this machine, for running the workflow through the SLURM executor.

`local_cluster()` starts munge, ``slurmctld`` and ``slurmd`` (Debian's packages: the local host is
controller and only node; select/cons_tres, proctrack/linuxproc, no accounting storage; memory
limits enforced without cgroups: slurmstepd samples each job's memory every second and kills a
job over its ``--mem``, writing "Exceeded job memory limit" to the job's log), waits until the
node is idle, yields, then cancels every job, stops the daemons it started and restores
``/etc/slurm/slurm.conf``. It needs root and Debian's packages
(:data:`tests.system_tools.SLURM`); without them it raises :class:`ClusterUnavailable` naming the
command that installs them. The tests call :func:`tests.system_tools.provide` first, which
installs them where it can (root with apt-get) and skips the tests elsewhere.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from tests.system_tools import SLURM, missing

SLURM_CONF = Path("/etc/slurm/slurm.conf")
SNAKEMAKE_SLURM = [
    "snakemake",
    "--profile",
    "workflow/profiles/slurm",
    "--slurm-status-command",
    "squeue",
    "--slurm-no-account",
    "--slurm-init-seconds-before-status-checks",
    "2",
    "--latency-wait",
    "5",
    "--set-resources",
    "train:gpu=0",
    "segment:gpu=0",
]
"""Snakemake through workflow/profiles/slurm on this cluster: no accounting (so squeue, not
sacct, and no account) and no GPUs (so train and segment ask for none and run on the CPU, see
the profile's comments). Targets go right after ``snakemake``: ``--set-resources`` takes every
word that follows it."""
MUNGE_KEY = Path("/etc/munge/munge.key")
MUNGE_SOCKET = Path("/run/munge/munge.socket.2")


class ClusterUnavailable(RuntimeError):
    """The SLURM cluster could not be started (packages missing, not root, daemons failing)."""


def ensure_installed() -> None:
    """Raise :class:`ClusterUnavailable` naming the install command if a program is missing."""
    absent = missing(SLURM)
    if absent:
        raise ClusterUnavailable(
            f"SLURM/munge programs missing ({', '.join(absent)}). Install them (as root) with\n"
            f"    {SLURM.install}"
        )


def _munge_works() -> bool:
    if not MUNGE_SOCKET.exists():
        return False
    encoded = subprocess.run(["munge", "-n"], capture_output=True, check=False)
    if encoded.returncode != 0:
        return False
    decoded = subprocess.run(["unmunge"], input=encoded.stdout, capture_output=True, check=False)
    return decoded.returncode == 0


def _start_munge(started: list[subprocess.Popen]) -> None:
    """Write a key if there is none and start munged as the munge user (unless one runs)."""
    if _munge_works():
        return
    user = pwd.getpwnam("munge")
    if not MUNGE_KEY.exists():
        MUNGE_KEY.parent.mkdir(parents=True, exist_ok=True)
        MUNGE_KEY.write_bytes(os.urandom(1024))
    os.chown(MUNGE_KEY, user.pw_uid, user.pw_gid)
    MUNGE_KEY.chmod(0o400)
    for folder in (Path("/run/munge"), Path("/var/lib/munge"), Path("/var/log/munge")):
        folder.mkdir(parents=True, exist_ok=True)
        os.chown(folder, user.pw_uid, user.pw_gid)
    started.append(
        subprocess.Popen(
            ["runuser", "-u", "munge", "--", "munged", "--foreground"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    )
    _wait(_munge_works, 20, "munged did not answer")


def slurm_conf(host: str, state: Path) -> str:
    """slurm.conf of a one-node cluster: ``host`` is controller and node, state under ``state``."""
    cpus = os.cpu_count() or 1
    total_mb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2**20
    memory = int(total_mb * 0.9)  # a bit under the total, so slurmd accepts the node
    return f"""\
# Written by tests/workflow/slurm_cluster.py for the duration of a test; restored afterwards.
ClusterName=sibnet-test
SlurmctldHost={host}(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation={state}/ctld
SlurmdSpoolDir={state}/d
SlurmctldPidFile={state}/slurmctld.pid
SlurmdPidFile={state}/slurmd.pid
SlurmctldLogFile={state}/slurmctld.log
SlurmdLogFile={state}/slurmd.log
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=task=1
JobAcctGatherParams=OverMemoryKill
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
ReturnToService=2
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=1
MinJobAge=600
NodeName={host} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={memory} State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
"""


def _wait(condition, seconds: float, message: str) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.5)
    raise ClusterUnavailable(message)


def _node_idle() -> bool:
    out = subprocess.run(["sinfo", "-h", "-N", "-o", "%T"], capture_output=True, text=True)
    return out.returncode == 0 and out.stdout.strip() == "idle"


@contextlib.contextmanager
def local_cluster() -> Iterator[Path]:
    """Run a one-node SLURM cluster for the duration of the block; yields its state folder."""
    if os.geteuid() != 0:
        raise ClusterUnavailable("starting slurmctld/slurmd/munged needs root")
    ensure_installed()
    started: list[subprocess.Popen] = []
    backup = SLURM_CONF.read_bytes() if SLURM_CONF.exists() else None
    state = Path(tempfile.mkdtemp(prefix="sibnet-slurm-"))
    try:
        _start_munge(started)
        SLURM_CONF.parent.mkdir(parents=True, exist_ok=True)
        SLURM_CONF.write_text(slurm_conf(socket.gethostname().split(".")[0], state))
        for daemon in ("slurmctld", "slurmd"):
            log = open(state / f"{daemon}.out", "wb")  # noqa: SIM115 (closed with the process)
            started.append(subprocess.Popen([daemon, "-D"], stdout=log, stderr=log))
        try:
            _wait(_node_idle, 60, "the SLURM node did not become idle within 60 s")
        except ClusterUnavailable as error:
            logs = "\n".join(
                f"--- {p.name}\n{p.read_text(errors='replace')[-3000:]}"
                for p in sorted(state.glob("*.log")) + sorted(state.glob("*.out"))
            )
            raise ClusterUnavailable(f"{error}\n{logs}") from None
        yield state
    finally:
        if shutil.which("scancel"):
            subprocess.run(["scancel", "--user", "root"], capture_output=True, check=False)
        for process in reversed(started):
            process.terminate()
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if backup is None:
            SLURM_CONF.unlink(missing_ok=True)
        else:
            SLURM_CONF.write_bytes(backup)
        shutil.rmtree(state, ignore_errors=True)
