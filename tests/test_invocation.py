"""sibnet.invocation: the pipeline invocation a job belongs to."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from sibnet.invocation import ENV_ENGINE, ENV_ID, current

PRINT = (
    "import json; from sibnet.invocation import current; "
    "run = current(); print(json.dumps([run.id, run.engine]))"
)


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in (ENV_ID, ENV_ENGINE)}
    return {**env, **extra}


def test_the_environment_names_the_invocation(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_ID, "study-7")
    monkeypatch.setenv(ENV_ENGINE, "snakemake")
    assert current().tags() == {"sibnet.invocation": "study-7", "sibnet.engine": "snakemake"}
    monkeypatch.delenv(ENV_ENGINE)
    assert current().engine == "environment"


def test_a_stage_run_by_hand_is_its_own_invocation() -> None:
    out = subprocess.run(
        [sys.executable, "-c", PRINT], env=_env(), capture_output=True, text=True, check=True
    )
    run_id, engine = json.loads(out.stdout)
    assert engine == "none" and run_id.startswith("none-")
    pid = run_id.rsplit("-", 1)[1]
    assert pid.isdigit() and pid != str(os.getpid()), "the stage's own process, not ours"


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux's /proc")
def test_jobs_of_one_dvc_process_share_its_invocation(tmp_path: Path) -> None:
    """A stand-in ``dvc`` (a Python script of that name) runs two jobs through a shell, as
    ``dvc repro`` does: both find it among their ancestors and report the same id; another
    ``dvc`` process is another invocation."""
    script = tmp_path / "dvc"
    script.write_text(
        f"#!{sys.executable}\n"
        "import subprocess, sys\n"
        "for _ in range(2):\n"
        f"    subprocess.run(['sh', '-c', '{sys.executable} -c \"{PRINT}\"'], check=True)\n"
    )
    script.chmod(0o755)
    outputs = []
    for _ in range(2):
        done = subprocess.run([str(script)], env=_env(), capture_output=True, text=True, check=True)
        outputs.append([json.loads(line) for line in done.stdout.splitlines()])
    for first, second in outputs:
        assert first == second and first[1] == "dvc" and first[0].startswith("dvc-")
    assert outputs[0][0][0] != outputs[1][0][0]
