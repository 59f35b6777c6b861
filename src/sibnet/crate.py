"""The lineage as a Workflow Run RO-Crate (Provenance Run Crate profile), for interoperable review.

The audit stage writes ``results/audit/ro-crate-metadata.json`` beside ``lineage.json``, built
with the ``rocrate`` package from the same lineage document (:func:`lineage_crate`). The crate's
root is ``results/audit/``; every file of the repository is named relative to it
(``../../results/phantom/...``), so the crate stays valid wherever the repository is cloned.
It conforms to the Process, Workflow and Provenance Run Crate profiles 0.5
(https://w3id.org/ro/wfrun/provenance/0.5) and Workflow RO-Crate 1.0:

- **the workflow**: ``Snakefile`` (``ComputationalWorkflow``, language Snakemake; DVC runs the
  same stages from ``dvc.yaml``), the crate's ``mainEntity``, with one ``HowToStep`` per stage;
  each step's ``workExample`` is its **tool**, the ``SoftwareApplication`` ``sibnet <stage>``,
  whose ``input`` lists the params it reads (``FormalParameter``) and whose
  ``softwareRequirements`` are the exact package versions the jobs ran with (Python included;
  the platform as ``operatingSystem``). A stage whose jobs ran in different environments gets
  one tool per environment;
- **each job** is a ``CreateAction`` (``#run/<job>``): ``instrument`` its tool, ``object`` the
  files it read (with their SHA-256) and its params (``PropertyValue``, dotted keys such as
  ``train.epochs``, ``exampleOfWork`` the tool's parameter), ``result`` the files it wrote,
  ``startTime``/``endTime``, ``identifier`` its MLflow run id; a ``ControlAction`` ties it to
  its step;
- **each pipeline invocation** (a ``snakemake`` or ``dvc repro`` run) is a ``CreateAction`` of
  the workflow (its inputs from outside, its outputs) and an ``OrganizeAction`` of the engine;
  the root ``mentions`` them;
- **every file** is a ``File`` with ``sha256`` and ``contentSize`` (bytes) — the same values as
  ``lineage.json``, which the crate holds too (``hasPart``), with ``lineage.md``.

Nothing else goes in: no environment variables, no tracking URI (MLflow run ids only), and the
text is checked for credentials before it is written (:func:`sibnet.tracking.leaks_credentials`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from sibnet.dag import STAGES
from sibnet.errors import SibnetError
from sibnet.files import sha256_file
from sibnet.lineage import entry_files, relative
from sibnet.tracking import flatten, leaks_credentials

__all__ = ["CRATE_FILE", "PROFILES", "CrateError", "crate_files", "crate_id", "lineage_crate"]

CRATE_FILE = "ro-crate-metadata.json"
PROFILES = (
    "https://w3id.org/ro/wfrun/process/0.5",
    "https://w3id.org/ro/wfrun/workflow/0.5",
    "https://w3id.org/ro/wfrun/provenance/0.5",
    "https://w3id.org/workflowhub/workflow-ro-crate/1.0",
)
SNAKEMAKE = "https://w3id.org/workflowhub/workflow-ro-crate#snakemake"
WORKFLOW = "Snakefile"


class CrateError(ValueError, SibnetError):
    """The crate cannot be written as it stands (e.g. a credential would reach it)."""


def _value(value: Any) -> Any:
    """A ``PropertyValue``'s value: scalars as they are, anything else as JSON text."""
    if isinstance(value, (bool, int, float, str)):
        return value
    return json.dumps(value, sort_keys=True)


def crate_files(document: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Every file the lineage names (each job's inputs, outputs and params file): path →
    ``{"sha256", "bytes"?}``. An output's values are its artifact's; a file only read, the
    hash its reader recorded."""
    files: dict[str, dict[str, Any]] = {}
    for job in document["jobs"]:
        for entry in [job["params_file"], *job["inputs"].values()]:
            for path, sha in entry_files(entry).items():
                files.setdefault(path, {"sha256": sha})
                if "files" not in entry and "bytes" in entry:
                    files[path]["bytes"] = entry["bytes"]
    for artifact in document["artifacts"]:
        files[artifact["path"]] = {"sha256": artifact["sha256"], "bytes": artifact["bytes"]}
    return files


def lineage_crate(
    document: Mapping[str, Any], folder: Path, *, extra: Mapping[str, Path] | None = None
) -> dict[str, Any]:
    """The Provenance Run Crate of the lineage ``document`` (:mod:`sibnet.stages.audit`), as
    the JSON-LD of ``<folder>/ro-crate-metadata.json`` (see the module docstring).

    Args:
        document: the content of ``lineage.json``.
        folder: the crate's root (the audit folder), relative to the working directory.
        extra: files of the crate itself (name inside ``folder`` → where the file lies now,
            e.g. ``lineage.json`` in the audit's temporary folder), listed with their hashes.
    """
    from rocrate.model import ContextEntity
    from rocrate.rocrate import ROCrate

    def ref(path: str) -> str:
        return crate_id(path, folder)

    crate = ROCrate()
    root = crate.root_dataset
    root["name"] = f"sibnet lineage: dataset {document['dataset']}"
    root["description"] = (
        "Provenance of every artifact of one sibnet pipeline run: the workflow, each job with "
        "its inputs, outputs, params and software versions (generated from lineage.json by "
        "`sibnet audit`)."
    )
    root["datePublished"] = document["generated"]
    root["license"] = "https://spdx.org/licenses/CC-BY-4.0"
    root["conformsTo"] = [{"@id": p} for p in PROFILES]
    for profile in PROFILES:
        crate.add(
            ContextEntity(
                crate,
                profile,
                properties={"@type": "CreativeWork", "name": profile.split("/ro/")[-1]},
            )
        )

    def context(identifier: str, properties: dict[str, Any]) -> Any:
        return crate.add(ContextEntity(crate, identifier, properties=properties))

    by_path: dict[str, Any] = {}
    for path, facts in sorted(crate_files(document).items()):
        properties = {"name": path, "sha256": facts["sha256"]}
        if "bytes" in facts:
            properties["contentSize"] = str(facts["bytes"])
        by_path[path] = crate.add_file(dest_path=ref(path), properties=properties)
    for name, where in (extra or {}).items():
        crate.add_file(
            dest_path=name,
            properties={
                "name": name,
                "sha256": sha256_file(where),
                "contentSize": str(Path(where).stat().st_size),
                "encodingFormat": "application/json" if name.endswith(".json") else "text/markdown",
            },
        )

    jobs = document["jobs"]
    packages: dict[str, Any] = {}

    def package(name: str, version: str) -> Any:
        key = f"#software/{name}@{version}"
        if key not in packages:
            packages[key] = context(
                key, {"@type": "SoftwareApplication", "name": name, "version": version}
            )
        return packages[key]

    versions = {p: v for j in jobs for p, v in j["environment"]["packages"].items() if v}
    language = context(
        SNAKEMAKE,
        {
            "@type": "ComputerLanguage",
            "name": "Snakemake",
            "identifier": {"@id": "https://snakemake.readthedocs.io"},
            "url": {"@id": "https://snakemake.readthedocs.io"},
            **({"version": versions["snakemake"]} if "snakemake" in versions else {}),
        },
    )
    workflow_properties: dict[str, Any] = {
        "@type": ["File", "SoftwareSourceCode", "ComputationalWorkflow", "HowTo"],
        "name": "sibnet pipeline",
        "programmingLanguage": language,
    }
    if Path(WORKFLOW).is_file():
        workflow_properties["sha256"] = sha256_file(Path(WORKFLOW))
    workflow = crate.add_file(dest_path=ref(WORKFLOW), properties=workflow_properties)
    root["mainEntity"] = workflow

    stages = [s for s in STAGES.values() if any(j["stage"] == s.name for j in jobs)]
    steps = {}
    for position, spec in enumerate(stages):
        steps[spec.name] = context(
            f"#step/{spec.name}",
            {"@type": "HowToStep", "name": spec.name, "position": str(position)},
        )
    workflow["step"] = list(steps.values())

    tools: dict[tuple[str, str], Any] = {}
    parameters: dict[tuple[str, str], Any] = {}
    controls: dict[str, Any] = {}
    for job in jobs:
        stage = job["stage"]
        env = job["environment"]
        env_key = json.dumps(env, sort_keys=True)
        if (stage, env_key) not in tools:
            same_stage = sum(1 for s, _ in tools if s == stage)
            identifier = f"#tool/{stage}" + (f"/env{same_stage + 1}" if same_stage else "")
            tool = context(
                identifier,
                {
                    "@type": "SoftwareApplication",
                    "name": f"sibnet {stage}",
                    "description": STAGES[stage].help if stage in STAGES else "",
                    "operatingSystem": env["platform"],
                    **(
                        {"version": env["packages"]["sibnet"]}
                        if env["packages"].get("sibnet")
                        else {}
                    ),
                },
            )
            tool["softwareRequirements"] = [package("python", env["python"])] + [
                package(name, version) for name, version in env["packages"].items() if version
            ]
            tools[(stage, env_key)] = tool
            steps[stage].append_to("workExample", tool)
        tool = tools[(stage, env_key)]
        values = []
        for key, value in flatten(job["params"]).items():
            parameter_id = f"#param/{stage}/{key}"
            if (stage, key) not in parameters:
                parameters[(stage, key)] = context(
                    parameter_id,
                    {
                        "@type": "FormalParameter",
                        "name": key,
                        "additionalType": "Text",
                        "conformsTo": {
                            "@id": "https://bioschemas.org/profiles/FormalParameter/1.0-RELEASE"
                        },
                    },
                )
            if parameter_id not in [p.id for p in tool.get("input") or []]:
                tool.append_to("input", parameters[(stage, key)])
            values.append(
                context(
                    f"#value/{job['job']}/{key}",
                    {
                        "@type": "PropertyValue",
                        "name": key,
                        "value": _value(value),
                        "exampleOfWork": parameters[(stage, key)],
                    },
                )
            )
        read = [by_path[p] for e in job["inputs"].values() for p in entry_files(e)]
        read += [by_path[p] for p in entry_files(job["params_file"])]
        written = [by_path[p] for e in job["outputs"].values() for p in entry_files(e)]
        action = crate.add_action(
            tool,
            identifier=f"#run/{job['job']}",
            object=read + values,
            result=written,
            properties={
                "@type": "CreateAction",
                "name": job["job"],
                "description": job["command"],
                "startTime": job["started"],
                "endTime": job["ended"],
                **({"identifier": job["mlflow_run_id"]} if job["mlflow_run_id"] else {}),
            },
        )
        controls[job["job"]] = context(
            f"#control/{job['job']}",
            {
                "@type": "ControlAction",
                "name": f"orchestrate {job['job']}",
                "instrument": steps[stage],
                "object": action,
            },
        )

    by_job = {j["job"]: j for j in jobs}
    runs = []
    for number, invocation in enumerate(document["invocations"]):
        members = [by_job[name] for name in invocation["jobs"]]
        produced = {p for j in members for e in j["outputs"].values() for p in entry_files(e)}
        consumed = {
            p
            for j in members
            for e in [*j["inputs"].values(), j["params_file"]]
            for p in entry_files(e)
        }
        run = crate.add_action(
            workflow,
            identifier=f"#invocation/{invocation['id'] or number}",
            object=[by_path[p] for p in sorted(consumed - produced)],
            result=[by_path[p] for p in sorted(produced)],
            properties={
                "@type": "CreateAction",
                "name": f"pipeline invocation {invocation['id'] or '(not recorded)'}",
                "startTime": min(j["started"] for j in members),
                "endTime": max(j["ended"] for j in members),
            },
        )
        engine_name = invocation["engine"] or "sibnet"
        engine = package(engine_name, versions.get(engine_name, "unknown"))
        context(
            f"#organize/{invocation['id'] or number}",
            {
                "@type": "OrganizeAction",
                "name": f"{engine_name} run of the pipeline",
                "instrument": engine,
                "object": [controls[j["job"]] for j in members],
                "result": run,
            },
        )
        runs.append(run)
    root["mentions"] = runs
    metadata = crate.metadata.generate()
    if leaks_credentials(json.dumps(metadata)):
        raise CrateError(
            "the RO-Crate would hold a credential of the tracking store (MLFLOW_TRACKING_URI or "
            "an MLflow credential variable): not written. A params value or command line holds "
            "it; remove it from there"
        )
    return metadata


def crate_id(path: str | Path, folder: Path) -> str:
    """The crate ``@id`` of a working-directory file ``path`` in the crate rooted at
    ``folder``."""
    up = Path(os.path.relpath(Path.cwd(), Path(folder).absolute())).as_posix()
    return f"{up}/{relative(path)}"
