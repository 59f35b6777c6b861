"""Exact reproduction, the DVC round trip, the lineage audit and relocatability, on the real
tiny pipeline runs (the ``snakemake_run`` and ``dvc_run`` fixtures of conftest.py)."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest

from tests.workflow.repo import clean_env, run

pytestmark = pytest.mark.slow

RESULT_FOLDERS = ("data/prepared", "models", "results")


def _hashes(root: Path, folders=RESULT_FOLDERS, skip=("results/audit",)) -> dict[str, str]:
    """SHA-256 of every file under ``folders`` (hidden engine markers and ``skip`` left out)."""
    found = {}
    for folder in folders:
        for path in sorted((root / folder).rglob("*")):
            name = path.relative_to(root).as_posix()
            if path.is_file() and "/." not in f"/{name}" and not name.startswith(skip):
                found[name] = hashlib.sha256(path.read_bytes()).hexdigest()
    return found


def test_two_runs_from_scratch_agree_bit_for_bit(snakemake_run: Path, dvc_run: Path) -> None:
    """Every model, table, figure and metric of two independent from-scratch runs (Snakemake
    in one clean copy, `dvc repro` in another) has the same SHA-256 — the audit, which holds
    times and host names, excepted."""
    first, second = _hashes(snakemake_run), _hashes(dvc_run)
    assert set(first) == set(second)
    assert [k for k in first if first[k] != second[k]] == []
    assert any(k.endswith("classifier.pt") for k in first)
    assert any(k.endswith(".parquet") for k in first)
    assert (snakemake_run / "results/metrics.json").read_bytes() == (
        dvc_run / "results/metrics.json"
    ).read_bytes()


def test_dvc_push_then_pull_restores_every_output(dvc_run: Path, tmp_path: Path) -> None:
    copy = tmp_path / "repo"
    shutil.copytree(dvc_run, copy, symlinks=True)
    env = clean_env()
    before = _hashes(copy)
    run(["dvc", "push"], copy, env=env)
    assert any((copy / "dvc-remote").rglob("*"))
    for folder in (*RESULT_FOLDERS, ".dvc/cache"):
        shutil.rmtree(copy / folder)
    status = run(["dvc", "status"], copy, env=env)
    assert "deleted" in status.stdout
    run(["dvc", "pull"], copy, env=env)
    status = run(["dvc", "status"], copy, env=env)
    assert "Data and pipelines are up to date" in status.stdout, status.stdout
    after = _hashes(copy)
    assert after == before


def test_the_audit_traces_every_output_and_verify_catches_tampering(
    snakemake_run: Path, tmp_path: Path
) -> None:
    lineage = json.loads((snakemake_run / "results/audit/lineage.json").read_text())
    artifacts = {a["path"]: a for a in lineage["artifacts"]}
    assert set(_hashes(snakemake_run)) <= set(artifacts)
    train = next(j for j in lineage["jobs"] if j["job"] == "train/tiny/sibnet/seed1")
    assert train["params"]["methods.sibnet"]["objective"] == "sibnet"
    assert train["mlflow_run_id"] and train["code"]["commit"] != "unknown"
    assert train["environment"]["packages"]["torch"].startswith("2.13.0")
    assert train["inputs"]["prepared"]["sha256"]
    assert "train/tiny/sibnet/seed1" in (snakemake_run / "results/audit/lineage.md").read_text()

    copy = tmp_path / "repo"
    shutil.copytree(snakemake_run, copy, symlinks=True)
    result = run(["sibnet", "audit", "--verify"], copy, env=clean_env())
    assert "every artifact" in result.stdout
    target = copy / "results/tiny/baseline/seed0/predictions.parquet"
    target.write_bytes(target.read_bytes()[:-1] + b"\0")
    with pytest.raises(AssertionError, match=r"changed:  results/tiny/baseline/seed0/pred"):
        run(["sibnet", "audit", "--verify"], copy, env=clean_env())


def _verify(copy: Path) -> str:
    """``sibnet audit --verify``'s output in ``copy``, expecting exit status 1."""
    with pytest.raises(AssertionError) as failed:
        run(["sibnet", "audit", "--verify"], copy, env=clean_env())
    assert "exited 1" in str(failed.value)
    return str(failed.value)


def _rehash(path: Path, artifact: str, content: bytes) -> None:
    """Set ``artifact``'s hash and size in the lineage document (or job record) at ``path``,
    wherever it is listed, to those of ``content`` (the consistent-edit attack)."""
    sha = hashlib.sha256(content).hexdigest()
    text = path.read_text()
    document = json.loads(text)
    for entry in document.get("artifacts", []):
        if entry["path"] == artifact:
            entry.update(sha256=sha, bytes=len(content))
    for job in [document, *document.get("jobs", [])]:
        for entry in job.get("outputs", {}).values():
            if entry.get("path") == artifact:
                entry.update(sha256=sha, bytes=len(content))
    path.write_text(json.dumps(document, indent=2))


def test_verify_cross_checks_the_audit_with_the_job_records_and_the_mlflow_runs(
    snakemake_run: Path, tmp_path: Path
) -> None:
    """Editing a result and its hash in lineage.json alike is caught by the job record and by
    the MLflow run; editing the job record too, by the MLflow run; a file added to a folder
    output after the audit is reported."""
    copy = tmp_path / "repo"
    shutil.copytree(snakemake_run, copy, symlinks=True)
    result = run(["sibnet", "audit", "--verify"], copy, env=clean_env())
    assert "the job records and the MLflow runs agree" in result.stdout
    assert "note:" not in result.stdout

    metrics = copy / "results/metrics.json"
    tampered = metrics.read_bytes() + b" "
    metrics.write_bytes(tampered)
    _rehash(copy / "results/audit/lineage.json", "results/metrics.json", tampered)
    found = _verify(copy)
    assert "changed:" not in found  # the audit itself was made consistent
    assert "disagree: results/metrics.json: lineage.json has" in found
    assert "the job record (.sibnet/lineage/<job>.json) of report/tiny has" in found
    assert "the MLflow run of report/tiny has" in found

    _rehash(copy / ".sibnet/lineage/report/tiny.json", "results/metrics.json", tampered)
    found = _verify(copy)
    assert "the job record (.sibnet/lineage/<job>.json) of" not in found
    assert "disagree: results/metrics.json: lineage.json has" in found
    assert "the MLflow run of report/tiny has" in found

    metrics.write_bytes(tampered[:-1])  # put the file back: lineage.json still differs
    extra = copy / "results/report/notes.csv"
    extra.write_text("added after the audit\n")
    found = _verify(copy)
    assert "changed:  results/metrics.json" in found
    assert "added:    results/report/notes.csv (inside output 'report' of report/tiny" in found


def test_verify_without_the_job_records_and_the_store_compares_what_is_there(
    snakemake_run: Path, tmp_path: Path
) -> None:
    """A clone that pulled the results: no .sibnet/lineage/, no mlflow.db. Verify re-hashes
    the files and says which sources it could not compare."""
    copy = tmp_path / "repo"
    shutil.copytree(snakemake_run, copy, symlinks=True)
    shutil.rmtree(copy / ".sibnet/lineage")
    (copy / "mlflow.db").unlink()
    result = run(["sibnet", "audit", "--verify"], copy, env=clean_env())
    assert "note: no job records here (.sibnet/lineage/): not compared" in result.stdout
    assert "note: no MLflow store here" in result.stdout
    assert "is as audited" in result.stdout


def test_nothing_written_holds_an_absolute_path_of_the_machine(snakemake_run: Path) -> None:
    """Checkpoints, manifests, dataset descriptions and lineage records are relocatable."""
    files = [
        *snakemake_run.glob("models/**/*.pt"),
        *snakemake_run.glob("data/prepared/*/manifest.parquet"),
        *snakemake_run.glob("data/prepared/*/dataset.json"),
        *snakemake_run.glob(".sibnet/lineage/**/*.json"),
        *snakemake_run.glob("results/audit/*"),
        *snakemake_run.glob("results/**/*.json"),
    ]
    assert len(files) > 20
    root = str(snakemake_run.resolve()).encode()
    for path in files:
        assert root not in path.read_bytes(), path


def test_the_crate_of_the_real_run_holds_its_lineage(
    snakemake_run: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The RO-Crate the DAG's audit wrote, read with the rocrate library: every artifact, job,
    param, software version and MLflow run id as in lineage.json."""
    from tests.stages.test_audit_crate import assert_crate_matches_lineage

    monkeypatch.chdir(snakemake_run)
    crate = assert_crate_matches_lineage(Path("results/audit"))
    assert crate.get("#run/train/tiny/sibnet/seed1")["identifier"]  # the MLflow run


def test_sign_and_verify_the_real_audit_from_the_command_line(
    snakemake_run: Path, tmp_path: Path
) -> None:
    """`sibnet audit --sign KEY` with a key made by the tools a user has (OpenSSH format from
    the cryptography package, as `ssh-keygen -t ed25519` writes), then `--verify --public-key`;
    an edit to lineage.json made consistent with the job record fails the signature."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519

    key = ed25519.Ed25519PrivateKey.generate()
    private, public = tmp_path / "id_ed25519", tmp_path / "id_ed25519.pub"
    private.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.OpenSSH,
            serialization.NoEncryption(),
        )
    )
    private.chmod(0o600)
    public.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
        )
    )
    copy = tmp_path / "repo"
    shutil.copytree(snakemake_run, copy, symlinks=True)
    run(["sibnet", "audit", "--sign", str(private)], copy, env=clean_env())
    result = run(
        ["sibnet", "audit", "--verify", "--public-key", str(public)], copy, env=clean_env()
    )
    assert "the audit folder is as signed by" in result.stdout

    lineage = copy / "results/audit/lineage.json"
    document = json.loads(lineage.read_text())
    document["generated"] = "2020-01-01T00:00:00+00:00"  # a one-field edit, hashes untouched
    lineage.write_text(json.dumps(document, indent=2, sort_keys=True) + "\n")
    with pytest.raises(AssertionError, match=r"signature: results/audit/lineage.json changed"):
        run(["sibnet", "audit", "--verify", "--public-key", str(public)], copy, env=clean_env())
