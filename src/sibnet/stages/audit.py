"""``sibnet audit``: the lineage of every result, for review — and ``--verify`` against tampering.

The last stage of the DAG. It reads the job records of :mod:`sibnet.lineage` for the current
pipeline (prepare, every method × seed of train / evaluate / robustness / saliency / segment,
the report), checks them, and writes

- ``results/audit/lineage.json``: every artifact (each file of every output: prepared data,
  models, tables, plots, metrics) with its SHA-256 and size → the job that produced it → that
  job's inputs with their hashes, the exact params it read, the code version (git commit,
  dirty tree), the environment (Python and package versions), its MLflow run id, start and end
  time and host;
- ``results/audit/lineage.md``: the same for people: one table of artifacts, then one section
  per job;
- ``results/audit/ro-crate-metadata.json``: the same as a Workflow Run RO-Crate (Provenance
  Run Crate profile), for tools that read the standard (:mod:`sibnet.crate`).

Checks (an :class:`AuditError` names the job or file and the fix):

- every job of the pipeline has a record (a job run before lineage existed, or a deleted
  ``.sibnet/lineage/``, needs re-running);
- every output still has the hash its job recorded (a file changed after its job ran);
- every input a job read is what the job that produced it wrote (a stale downstream result).

``sibnet audit --verify [--lineage results/audit]`` re-hashes every artifact listed in
``lineage.json`` and reports each that changed or vanished since the audit, and each file added
inside a folder output; and it compares every artifact's hash in ``lineage.json`` with two
copies the audit cannot rewrite: the job's record in ``.sibnet/lineage/`` and the hashes the
job logged to its MLflow run (``sibnet/outputs.json``, written by the ``sibnet`` command after
the job; on a tracking server, a separate trust domain). Any disagreement names the artifact
and the two sources; it exits 1 on any finding (see :func:`verify`).

``sibnet audit --sign KEY`` signs the audit folder with an Ed25519 key, and ``--verify
--public-key PUB`` checks that signature too (:mod:`sibnet.signing`): the record itself then
cannot be edited unseen by anyone without the key.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from sibnet.config import Params
from sibnet.crate import CRATE_FILE, lineage_crate
from sibnet.dag import STAGES
from sibnet.errors import SibnetError
from sibnet.files import atomic_dir, sha256_file, write_json
from sibnet.lineage import (
    LINEAGE_DIR,
    digest,
    entry_files,
    job_name,
    now,
    output_files,
    read_document,
    read_records,
    relative,
    tree_files,
)
from sibnet.tracking import DEFAULT_TRACKING_URI, git_state, start_run, tracking_uri

__all__ = [
    "LINEAGE_FORMAT",
    "AuditError",
    "audit",
    "prov_command",
    "read_lineage",
    "sign_command",
    "verify",
    "verify_command",
]

log = logging.getLogger(__name__)

LINEAGE_FORMAT = "sibnet-lineage/1"


class AuditError(ValueError, SibnetError):
    """The lineage records are missing, or disagree with the files; the message says which."""


def _expected_jobs(params: Params) -> list[str]:
    dataset = params.prepare.dataset
    jobs = []
    for spec in STAGES.values():
        if spec.name == "audit":
            continue
        if spec.per_method:
            jobs += [
                job_name(spec.name, dataset, m, s)
                for m in params.pipeline.methods
                for s in params.pipeline.seeds
            ]
        else:
            jobs.append(job_name(spec.name, dataset))
    return jobs


def _check(records: dict[str, dict[str, Any]], jobs: list[str], where: Path) -> None:
    missing = [j for j in jobs if j not in records]
    if missing:
        raise AuditError(
            f"no lineage record in {where} for job(s) {missing}: they ran before lineage was "
            "recorded, or the records were removed; re-run them (snakemake --forcerun "
            f"{' '.join(sorted({j.split('/')[0] for j in missing}))}, or dvc repro --force)"
        )
    produced: dict[str, tuple[str, str]] = {}
    for job in jobs:
        for name, recorded in records[job]["outputs"].items():
            now_ = digest(recorded["path"])
            if now_.get("sha256") != recorded.get("sha256"):
                changed = sorted(
                    set(entry_files(recorded).items()) ^ set(entry_files(now_).items()), key=str
                )
                raise AuditError(
                    f"{recorded['path']} ({job}, output {name!r}) differs from what its job "
                    f"wrote (first difference: {changed[0][0] if changed else 'the folder'}); "
                    "re-run that job or restore the file"
                )
            produced.update({path: (sha, job) for path, sha in entry_files(recorded).items()})
    for job in jobs:
        for name, entry in records[job]["inputs"].items():
            for path, sha in entry_files(entry).items():
                if path in produced and produced[path][0] != sha:
                    raise AuditError(
                        f"{job} read {path} (input {name!r}) before {produced[path][1]} last "
                        "rewrote it: its results are stale; re-run it"
                    )


def audit(
    params: Params,
    *,
    prepared: Path,
    models: Path,
    results: Path,
    report: Path,
    metrics: Path,
    noise_plot: Path,
    saliency_plot: Path,
    lineage: Path,
    records: Path = LINEAGE_DIR,
) -> dict[str, Any]:
    """Check the lineage records of the pipeline and write ``lineage.json`` / ``lineage.md``
    into the folder ``lineage`` (see the module docstring). The other paths are the artifacts
    audited (they also order this stage last in the DAG). Returns the lineage document."""
    with start_run(params, stage="audit") as tracker:
        by_job = {r["job"]: r for r in read_records(records)}
        jobs = _expected_jobs(params)
        _check(by_job, jobs, records)
        artifacts = []
        for job in jobs:
            record = by_job[job]
            for name, entry in record["outputs"].items():
                for path, sha in entry_files(entry).items():
                    artifacts.append(
                        {
                            "path": path,
                            "sha256": sha,
                            "bytes": Path(path).stat().st_size,
                            "job": job,
                            "stage": record["stage"],
                            "output": name,
                        }
                    )
        audited = {relative(p) for p in (prepared, models, results, report, metrics)}
        audited |= {relative(noise_plot), relative(saliency_plot)}
        uncovered = sorted(
            a["path"]
            for a in artifacts
            if not any(a["path"] == r or a["path"].startswith(r + "/") for r in audited)
        )
        if uncovered:
            log.warning("artifacts outside the audited folders: %s", uncovered)
        document = {
            "format": LINEAGE_FORMAT,
            "generated": now(),
            "dataset": params.prepare.dataset,
            "code": git_state(),
            "invocations": _invocations([by_job[j] for j in jobs]),
            "artifacts": sorted(artifacts, key=lambda a: a["path"]),
            "jobs": [by_job[j] for j in jobs],
        }
        with atomic_dir(lineage) as tmp:
            write_json(tmp / "lineage.json", document)
            (tmp / "lineage.md").write_text(_markdown(document), encoding="utf-8")
            own = {name: tmp / name for name in ("lineage.json", "lineage.md")}
            write_json(tmp / CRATE_FILE, lineage_crate(document, Path(lineage), extra=own))
        log.info("%d artifacts of %d jobs → %s", len(artifacts), len(jobs), lineage)
        tracker.log_metrics({"artifacts": len(artifacts), "jobs": len(jobs)})
        tracker.log_artifact(Path(lineage) / "lineage.json")
        tracker.log_artifact(Path(lineage) / "lineage.md")
        tracker.log_artifact(Path(lineage) / CRATE_FILE)
    return document


def _invocations(jobs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The pipeline invocations (``snakemake`` / ``dvc repro`` runs) that ran ``jobs``: id,
    engine and the jobs of each, in order of their first job's start; a job recorded before
    invocations were, under id ``None``."""
    found: dict[str | None, dict[str, Any]] = {}
    for job in sorted(jobs, key=lambda j: j["started"]):
        run = job.get("invocation") or {"id": None, "engine": None}
        entry = found.setdefault(run["id"], {"id": run["id"], "engine": run["engine"], "jobs": []})
        entry["jobs"].append(job["job"])
    return list(found.values())


def read_lineage(lineage: Path) -> dict[str, Any]:
    """The lineage document ``<lineage>/lineage.json``, its format checked."""
    path = Path(lineage) / "lineage.json"
    if not path.is_file():
        raise AuditError(f"{path}: not found; run `sibnet audit` (the DAG's last stage) first")
    try:
        return read_document(path, LINEAGE_FORMAT)
    except ValueError as error:
        raise AuditError(str(error)) from None


def verify(lineage: Path, records: Path = LINEAGE_DIR, notes: list[str] | None = None) -> list[str]:
    """Check the files and the audit against each other and against two independent copies of
    the hashes; return one line per finding (empty: all intact).

    - every artifact of ``<lineage>/lineage.json`` is re-hashed (``changed``, ``vanished``);
    - every file inside a folder output that is not in the audit is reported (``added``);
    - every artifact's hash is compared with its job's record in ``records``
      (``.sibnet/lineage/``) and with the hashes the job logged to its MLflow run
      (:func:`sibnet.tracking.log_output_hashes`; jobs run with tracking off have none):
      ``disagree`` names the artifact and the two sources that differ. Editing a result and
      its hash in ``lineage.json`` alike is caught here; so is a record or MLflow entry that
      lost its artifact (``unrecorded``).

    A source that is not on this machine at all — no ``records`` folder (a clone that pulled
    the results with DVC), or the default local MLflow store ``./mlflow.db`` absent with
    ``MLFLOW_TRACKING_URI`` unset — is not compared; a line saying so goes to ``notes``. A
    source that is here but lacks a job (a deleted record, a run without output hashes) is a
    finding (``missing``).
    """
    from sibnet.tracking import TrackingError, logged_output_hashes

    document = read_lineage(lineage)
    problems = []
    audited = {a["path"]: a for a in document["artifacts"]}
    for artifact in document["artifacts"]:
        file = Path(artifact["path"])
        if not file.is_file():
            problems.append(f"vanished: {artifact['path']} (from {artifact['job']})")
        elif sha256_file(file) != artifact["sha256"]:
            problems.append(f"changed:  {artifact['path']} (from {artifact['job']})")
    for job in document["jobs"]:
        for name, entry in job["outputs"].items():
            if "files" not in entry or not Path(entry["path"]).is_dir():
                continue
            for file in tree_files(Path(entry["path"])):
                if relative(file) not in audited:
                    problems.append(
                        f"added:    {relative(file)} (inside output {name!r} of {job['job']}, "
                        "not in the audit)"
                    )
    notes = [] if notes is None else notes
    sources: list[tuple[str, dict[str, dict[str, str] | str]]] = []
    if Path(records).is_dir():
        by_job = {r["job"]: r for r in read_records(records)}
        sources.append(
            (
                f"the job record ({records}/<job>.json)",
                {
                    j["job"]: output_files(by_job[j["job"]])
                    if j["job"] in by_job
                    else f"no record {records}/{j['job']}.json"
                    for j in document["jobs"]
                },
            )
        )
    else:
        notes.append(f"no job records here ({records}/): not compared")
    tracked = [j for j in document["jobs"] if j.get("mlflow_run_id")]
    if tracked and not _local_store_absent():
        mlflow: dict[str, dict[str, str] | str] = {}
        for job in tracked:
            try:
                mlflow[job["job"]] = logged_output_hashes(job["mlflow_run_id"])
            except TrackingError as error:
                mlflow[job["job"]] = str(error)
        sources.append(("the MLflow run", mlflow))
    elif tracked:
        notes.append(
            f"no MLflow store here ({DEFAULT_TRACKING_URI}, MLFLOW_TRACKING_URI unset): the "
            "runs' output hashes not compared"
        )
    for label, hashes in sources:
        for job_name_, found in hashes.items():
            if isinstance(found, str):
                problems.append(f"missing:  {job_name_}: {label}: {found}")
                continue
            mine = {p: a["sha256"] for p, a in audited.items() if a["job"] == job_name_}
            for file in sorted(set(mine) | set(found)):
                if file not in found:
                    problems.append(f"disagree: {file}: lineage.json lists it, {label} does not")
                elif file not in mine:
                    problems.append(f"unrecorded: {file}: {label} lists it, lineage.json does not")
                elif found[file] != mine[file]:
                    problems.append(
                        f"disagree: {file}: lineage.json has {mine[file][:12]}…, {label} of "
                        f"{job_name_} has {found[file][:12]}…"
                    )
    return problems


def _local_store_absent() -> bool:
    """Whether the MLflow store is the default local one and it does not exist here."""
    uri = tracking_uri()
    return uri == DEFAULT_TRACKING_URI and not Path(uri.removeprefix("sqlite:///")).is_file()


def verify_command(
    *,
    lineage: Path | None = None,
    public_key: Path | None = None,
    **_paths: Path | None,
) -> int:
    """``sibnet audit --verify [--lineage DIR] [--public-key PUB]``: print :func:`verify`'s
    findings (and, with ``PUB``, :func:`sibnet.signing.verify_signature`'s) and a summary; exit
    status 1 if there is any, else 0. (The audit's other paths, given or not, are not
    needed.)"""
    from sibnet.signing import signature_path, verify_signature

    folder = lineage or Path(STAGES["audit"].outputs["lineage"])
    notes: list[str] = []
    problems = verify(folder, notes=notes)
    if public_key is not None:
        problems += verify_signature(folder, public_key)
    elif signature_path(folder).is_file():
        notes.append(f"{signature_path(folder)} not checked: give --public-key PUB")
    for line in notes:
        print(f"note: {line}")
    for line in problems:
        print(line)
    print(
        f"{len(problems)} finding(s): the files, the audit, the job records and the MLflow "
        "runs do not all agree"
        + (", or the signature does not hold" if public_key is not None else "")
        if problems
        else f"every artifact in {folder / 'lineage.json'} is as audited, "
        + (
            "the job records and the MLflow runs agree"
            if not notes
            else "what is here of the job records and the MLflow runs agrees (see the notes)"
        )
        + (f", and the audit folder is as signed by {public_key}" if public_key else "")
    )
    return 1 if problems else 0


def sign_command(
    *,
    sign: Path,
    lineage: Path | None = None,
    **_paths: Path | None,
) -> int:
    """``sibnet audit --sign KEY [--lineage DIR]``: sign the audit folder
    (:func:`sibnet.signing.sign`); print where the signature went and the key's fingerprint."""
    from sibnet.signing import sign as sign_folder

    folder = lineage or Path(STAGES["audit"].outputs["lineage"])
    written = sign_folder(folder, sign)
    fingerprint = json.loads(written.read_text(encoding="utf-8"))["public_key"]
    print(f"signed {folder} → {written} (key {fingerprint})")
    return 0


def prov_command(*, prov: Path, lineage: Path | None = None, **_paths: Path | None) -> int:
    """``sibnet audit --prov FILE [--lineage DIR]``: write the lineage as W3C PROV
    (:func:`sibnet.w3c_prov.write_prov`)."""
    from sibnet.w3c_prov import write_prov

    folder = lineage or Path(STAGES["audit"].outputs["lineage"])
    print(f"W3C PROV of {folder / 'lineage.json'} → {write_prov(read_lineage(folder), prov)}")
    return 0


def _markdown(document: dict[str, Any]) -> str:
    code = document["code"]
    lines = [
        f"# Lineage audit: dataset `{document['dataset']}`",
        "",
        f"Generated {document['generated']} at commit `{code['commit']}` "
        f"(dirty tree: {code['dirty']}). {len(document['artifacts'])} artifacts from "
        f"{len(document['jobs'])} jobs. Check the files against it with "
        "`sibnet audit --verify`.",
        "",
        "Pipeline invocations (MLflow tag `sibnet.invocation`): "
        + "; ".join(
            f"`{run['id']}` ({run['engine']}, {len(run['jobs'])} jobs)"
            for run in document["invocations"]
        )
        + ".",
        "",
        "## Artifacts",
        "",
        "| artifact | SHA-256 | bytes | produced by | MLflow run |",
        "|---|---|---|---|---|",
    ]
    runs = {j["job"]: j["mlflow_run_id"] or "—" for j in document["jobs"]}
    for a in document["artifacts"]:
        lines.append(
            f"| `{a['path']}` | `{a['sha256'][:16]}…` | {a['bytes']} | {a['job']} "
            f"| {runs[a['job']]} |"
        )
    lines += ["", "## Jobs", ""]
    for job in document["jobs"]:
        env = job["environment"]
        packages = ", ".join(f"{k} {v}" for k, v in env["packages"].items() if v)
        lines += [
            f"### {job['job']}",
            "",
            f"- command: `{job['command']}`",
            f"- ran {job['started']} → {job['ended']} on `{job['host']}`; MLflow run "
            f"{job['mlflow_run_id'] or '— (tracking off)'}; invocation "
            f"`{(job.get('invocation') or {}).get('id')}`",
            f"- code: commit `{job['code']['commit']}`, dirty tree: {job['code']['dirty']}",
            f"- environment: Python {env['python']} ({env['platform']}); {packages}",
            f"- params file `{job['params_file']['path']}` "
            f"(`{job['params_file'].get('sha256', 'missing')[:16]}…`); params read:",
            "",
            "```json",
            json.dumps(job["params"], indent=2, sort_keys=True),
            "```",
            "",
            "| input | SHA-256 |",
            "|---|---|",
            *(
                f"| `{e['path']}` | `{e.get('sha256', 'missing')[:16]}…` |"
                for e in job["inputs"].values()
            ),
            "",
        ]
    return "\n".join(lines) + "\n"
