"""The lineage as W3C PROV (the ``prov`` package), for tools that speak PROV rather than RO-Crate.

``sibnet audit --prov FILE`` writes it from ``results/audit/lineage.json``: PROV-JSON for a
``.json`` name, PROV-N for ``.provn``. Not a DAG output (the RO-Crate is the standard record);
sign the audit after writing it inside the audit folder, or keep it beside.

- every file is an ``entity`` (``sibnet:artifact/<path>``) with ``sibnet:sha256`` and, where
  known, ``sibnet:bytes``;
- every job is an ``activity`` (``sibnet:job/<job>``) with its start and end time, command, params
  (``sibnet:params``, JSON) and MLflow run id; it ``used`` its inputs and params file and its
  outputs ``wasGeneratedBy`` it;
- every stage tool is a ``SoftwareAgent`` (``sibnet:tool/<stage>``) carrying the package versions;
  the job ``wasAssociatedWith`` it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

from sibnet.crate import crate_files
from sibnet.errors import SibnetError
from sibnet.files import atomic_file
from sibnet.lineage import entry_files

__all__ = ["NAMESPACE", "PROV_FORMATS", "lineage_prov", "write_prov"]

NAMESPACE = "urn:sibnet:"
PROV_FORMATS = {".json": "json", ".provn": "provn"}


def lineage_prov(document: Mapping[str, Any]) -> Any:
    """The ``prov.model.ProvDocument`` of the lineage ``document`` (module docstring)."""
    from prov.model import ProvDocument

    prov = ProvDocument()
    prov.add_namespace("sibnet", NAMESPACE)
    entities = {}
    for path, facts in sorted(crate_files(document).items()):
        attributes: dict[str, Any] = {"prov:label": path, "sibnet:sha256": facts["sha256"]}
        if "bytes" in facts:
            attributes["sibnet:bytes"] = int(facts["bytes"])
        entities[path] = prov.entity(f"sibnet:artifact/{path}", attributes)
    agents = {}
    for job in document["jobs"]:
        stage, env = job["stage"], job["environment"]
        key = (stage, json.dumps(env, sort_keys=True))
        if key not in agents:
            number = sum(1 for s, _ in agents if s == stage)
            agents[key] = prov.agent(
                f"sibnet:tool/{stage}" + (f"/env{number + 1}" if number else ""),
                {
                    "prov:type": "prov:SoftwareAgent",
                    "prov:label": f"sibnet {stage}",
                    "sibnet:python": env["python"],
                    "sibnet:platform": env["platform"],
                    "sibnet:packages": json.dumps(
                        {k: v for k, v in env["packages"].items() if v}, sort_keys=True
                    ),
                },
            )
        activity = prov.activity(
            f"sibnet:job/{job['job']}",
            datetime.fromisoformat(job["started"]),
            datetime.fromisoformat(job["ended"]),
            {
                "prov:label": job["job"],
                "sibnet:command": job["command"],
                "sibnet:params": json.dumps(job["params"], sort_keys=True),
                "sibnet:mlflow_run_id": job["mlflow_run_id"] or "",
            },
        )
        prov.wasAssociatedWith(activity, agents[key])
        for entry in [*job["inputs"].values(), job["params_file"]]:
            for path in entry_files(entry):
                prov.used(activity, entities[path])
        for entry in job["outputs"].values():
            for path in entry_files(entry):
                prov.wasGeneratedBy(entities[path], activity)
    return prov


class ProvError(ValueError, SibnetError):
    """The PROV export cannot be written (an unknown format)."""


def write_prov(document: Mapping[str, Any], path: Path) -> Path:
    """Write :func:`lineage_prov` of ``document`` to ``path`` (format by suffix,
    :data:`PROV_FORMATS`), atomically; returns ``path``."""
    path = Path(path)
    fmt = PROV_FORMATS.get(path.suffix)
    if fmt is None:
        raise ProvError(f"{path}: PROV format by suffix, one of {sorted(PROV_FORMATS)}")
    text = lineage_prov(document).serialize(format=fmt, **({"indent": 2} if fmt == "json" else {}))
    with atomic_file(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return path
