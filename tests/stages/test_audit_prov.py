"""``sibnet audit --prov FILE`` (:mod:`sibnet.w3c_prov`), read back with the ``prov`` package."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from prov.model import ProvDocument

from sibnet.cli import main
from sibnet.lineage import entry_files
from sibnet.w3c_prov import NAMESPACE, lineage_prov
from tests.stages.test_audit import _audit, tree  # noqa: F401  (the fixture)


def test_prov_json_round_trips_and_holds_the_lineage(tree) -> None:  # noqa: F811
    _audit(tree)
    assert main(["audit", "--prov", "results/audit.prov.json"]) == 0
    document = json.loads(Path("results/audit/lineage.json").read_text())
    prov = ProvDocument.deserialize(Path("results/audit.prov.json"), format="json")
    assert prov == lineage_prov(document)  # the round trip

    records = {r.identifier.uri: r for r in prov.get_records() if r.identifier is not None}
    for artifact in document["artifacts"]:
        entity = records[f"{NAMESPACE}artifact/{artifact['path']}"]
        attributes = {k.uri: v for k, v in entity.attributes}
        assert attributes[f"{NAMESPACE}sha256"] == artifact["sha256"]
        assert attributes[f"{NAMESPACE}bytes"] == artifact["bytes"]
    used: dict[str, set[str]] = {}
    generated: dict[str, set[str]] = {}
    for record in prov.get_records():
        args = [getattr(a, "uri", str(a)) for a in record.args[:2]]
        if record.get_type().localpart == "Usage":
            used.setdefault(args[0], set()).add(args[1])
        elif record.get_type().localpart == "Generation":
            generated.setdefault(args[1], set()).add(args[0])
    for job in document["jobs"]:
        activity = f"{NAMESPACE}job/{job['job']}"
        assert activity in records
        reads = {p for e in [*job["inputs"].values(), job["params_file"]] for p in entry_files(e)}
        writes = {p for e in job["outputs"].values() for p in entry_files(e)}
        assert used.get(activity, set()) == {f"{NAMESPACE}artifact/{p}" for p in reads}
        assert generated[activity] == {f"{NAMESPACE}artifact/{p}" for p in writes}


def test_prov_n_and_bad_names(tree, capsys: pytest.CaptureFixture[str]) -> None:  # noqa: F811
    _audit(tree)
    assert main(["audit", "--prov", "lineage.provn"]) == 0
    text = Path("lineage.provn").read_text()
    assert text.startswith("document") and "wasGeneratedBy(" in text
    capsys.readouterr()
    assert main(["audit", "--prov", "lineage.ttl"]) == 2
    assert "one of ['.json', '.provn']" in capsys.readouterr().err
    assert not Path("lineage.ttl").exists()
