"""``sibnet audit`` on a synthetic pipeline tree with real lineage records, and ``--verify``."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from sibnet.cli import main
from sibnet.config import Params, validate_params
from sibnet.dag import STAGES, expand
from sibnet.lineage import read_records, write_record
from sibnet.stages.audit import AuditError, audit, verify

AUDIT_PATHS = {
    name: Path(expand(template, dataset="toy"))
    for name, template in {**STAGES["audit"].inputs, **STAGES["audit"].outputs}.items()
}


def _params() -> Params:
    return validate_params(
        {
            "prepare": {"dataset": "toy"},
            "pipeline": {"methods": ["baseline", "sibnet"], "seeds": [0]},
            "tracking": {"enabled": False},
        }
    )


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def _run_job(params: Params, name: str, method: str | None = None, seed: int | None = None):
    """Create the outputs of one job (a file each; folders get one file) and record it."""
    spec = STAGES[name]
    values = {"dataset": "toy", "method": method or "", "seed": str(seed)}
    outputs = {k: Path(expand(t, **values)) for k, t in spec.outputs.items()}
    for key, path in outputs.items():
        _write(path / "part.bin" if key in spec.directories else path, f"{name} {method} {key}")
    write_record(
        stage=name,
        dataset="toy",
        method=method,
        seed=seed,
        argv=[name, "--params", "params.yaml"],
        params_file=Path("params.yaml"),
        params={"pipeline": params.pipeline.model_dump()},
        inputs={k: Path(expand(t, **values)) for k, t in spec.inputs.items()},
        outputs=outputs,
        code={"commit": "abc", "dirty": "false"},
        mlflow_run_id=None,
        started="2026-01-01T00:00:00+00:00",
        ended="2026-01-01T00:00:01+00:00",
    )


@pytest.fixture
def tree(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Params:
    """A complete synthetic pipeline tree in tmp_path (the working directory)."""
    monkeypatch.chdir(tmp_path)
    _write(Path("params.yaml"), "prepare: {dataset: toy}\n")
    params = _params()
    for name, spec in STAGES.items():
        if name == "audit":
            continue
        if spec.per_method:
            for method in params.pipeline.methods:
                _run_job(params, name, method, 0)
        else:
            _run_job(params, name)
    return params


def _audit(params: Params) -> dict:
    return audit(params, **{k: v for k, v in AUDIT_PATHS.items()})


def test_every_artifact_is_traced_to_its_job(tree: Params) -> None:
    document = _audit(tree)
    paths = {a["path"]: a for a in document["artifacts"]}
    assert paths["models/toy/sibnet/seed0/classifier.pt"]["job"] == "train/toy/sibnet/seed0"
    assert paths["data/prepared/toy/part.bin"]["stage"] == "prepare"
    assert paths["results/metrics.json"]["job"] == "report/toy"
    jobs = {j["job"]: j for j in document["jobs"]}
    evaluate = jobs["evaluate/toy/baseline/seed0"]
    assert evaluate["inputs"]["checkpoint"]["path"] == "models/toy/baseline/seed0/classifier.pt"
    assert (
        evaluate["inputs"]["checkpoint"]["sha256"]
        == (paths["models/toy/baseline/seed0/classifier.pt"]["sha256"])
    )
    assert set(evaluate["environment"]["packages"]) >= {"torch", "monai", "numpy"}
    assert evaluate["host"] and evaluate["code"]["commit"] == "abc"
    written = json.loads(Path("results/audit/lineage.json").read_text())
    assert written["artifacts"] == document["artifacts"]
    text = Path("results/audit/lineage.md").read_text()
    assert "models/toy/baseline/seed0/classifier.pt" in text
    assert "### train/toy/sibnet/seed0" in text
    assert str(Path.cwd()) not in Path("results/audit/lineage.json").read_text()
    for record in read_records():
        assert str(Path.cwd()) not in json.dumps(record)


def test_a_missing_record_is_an_error(tree: Params) -> None:
    Path(".sibnet/lineage/saliency/toy/sibnet/seed0.json").unlink()
    with pytest.raises(AuditError, match=r"no lineage record .*saliency/toy/sibnet/seed0"):
        _audit(tree)


def test_an_output_changed_after_its_job_is_an_error(tree: Params) -> None:
    _write(Path("results/toy/baseline/seed0/metrics.json"), "edited by hand")
    with pytest.raises(AuditError, match=r"results/toy/baseline/seed0/metrics.json .*differs"):
        _audit(tree)


def test_a_stale_downstream_result_is_an_error(tree: Params) -> None:
    _run_job(tree, "train", "baseline", 0)  # retrained with the same bytes: still consistent
    _audit(tree)
    path = Path("models/toy/baseline/seed0/classifier.pt")
    _write(path, "retrained")  # a new checkpoint, recorded by its job; evaluate not re-run
    write_record(
        stage="train",
        dataset="toy",
        method="baseline",
        seed=0,
        argv=["train"],
        params_file=Path("params.yaml"),
        params={},
        inputs={"prepared": Path("data/prepared/toy")},
        outputs={"checkpoint": path, "history": Path("models/toy/baseline/seed0/history.csv")},
        code={"commit": "abc", "dirty": "false"},
        mlflow_run_id=None,
        started="2026-01-02T00:00:00+00:00",
        ended="2026-01-02T00:00:01+00:00",
    )
    with pytest.raises(AuditError, match=r"evaluate/toy/baseline/seed0 read .*classifier.pt"):
        _audit(tree)


def test_verify_catches_tampering_and_vanishing(
    tree: Params, capsys: pytest.CaptureFixture[str]
) -> None:
    _audit(tree)
    assert verify(Path("results/audit")) == []
    assert main(["audit", "--verify"]) == 0
    _write(Path("results/toy/sibnet/seed0/saliency.json"), "tampered")
    os.remove("models/toy/baseline/seed0/history.csv")
    problems = verify(Path("results/audit"))
    assert problems == [
        "vanished: models/toy/baseline/seed0/history.csv (from train/toy/baseline/seed0)",
        "changed:  results/toy/sibnet/seed0/saliency.json (from saliency/toy/sibnet/seed0)",
    ]
    capsys.readouterr()
    assert main(["audit", "--verify", "--lineage", "results/audit"]) == 1
    out = capsys.readouterr().out
    assert "changed:  results/toy/sibnet/seed0/saliency.json" in out
    assert "2 finding(s)" in out


def test_verify_catches_a_result_and_its_audited_hash_edited_alike(tree: Params) -> None:
    """The consistent edit (the file, and its hash and size in lineage.json) is caught by the
    job's record in .sibnet/lineage/, which holds the hash the job wrote. A file added to a
    folder output and a deleted job record are findings too. (Tracking is off here: the
    MLflow copy is checked on the real pipeline, tests/workflow/test_lineage.py.)"""
    import hashlib

    _audit(tree)
    target = Path("results/toy/sibnet/seed0/saliency.json")
    content = target.read_bytes() + b" "
    target.write_bytes(content)
    lineage = Path("results/audit/lineage.json")
    document = json.loads(lineage.read_text())
    for artifact in document["artifacts"]:
        if artifact["path"] == target.as_posix():
            artifact.update(sha256=hashlib.sha256(content).hexdigest(), bytes=len(content))
    lineage.write_text(json.dumps(document))
    problems = verify(Path("results/audit"))
    assert len(problems) == 1 and problems[0].startswith(
        "disagree: results/toy/sibnet/seed0/saliency.json: lineage.json has "
    )
    assert "the job record (.sibnet/lineage/<job>.json) of saliency/toy/sibnet/seed0" in problems[0]

    folder = Path(STAGES["report"].outputs["report"])
    _write(folder / "late.csv", "added after the audit")
    os.remove(Path(".sibnet/lineage/evaluate/toy/baseline/seed0.json"))
    problems = verify(Path("results/audit"))
    assert f"added:    {folder.as_posix()}/late.csv (inside output 'report' of report/toy, " in (
        "\n".join(problems)
    )
    assert any(
        p.startswith("missing:  evaluate/toy/baseline/seed0: the job record") for p in problems
    )


def test_verify_without_an_audit_names_the_fix(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(AuditError, match="run `sibnet audit`"):
        verify(Path("results/audit"))
    assert main(["audit", "--verify"]) == 2
