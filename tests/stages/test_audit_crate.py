"""The audit's Workflow Run RO-Crate (:mod:`sibnet.crate`), read back with the ``rocrate``
package's own reader, on the synthetic pipeline tree of ``test_audit`` (and, through
:func:`assert_crate_matches_lineage`, on the real tiny pipeline in tests/workflow)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from rocrate.rocrate import ROCrate

from sibnet.crate import CRATE_FILE, PROFILES, CrateError
from sibnet.lineage import entry_files
from sibnet.tracking import flatten
from tests.stages.test_audit import _audit, tree  # noqa: F401  (the fixture)

AUDIT = Path("results/audit")


def _ids(value: object) -> list[str]:
    """The ``@id`` of each entity a property points to (one or a list)."""
    items = value if isinstance(value, list) else [value]
    return [item.id for item in items if item is not None]


def assert_crate_matches_lineage(folder: Path) -> ROCrate:
    """Read ``<folder>/ro-crate-metadata.json`` with the library and check it against
    ``<folder>/lineage.json``: profiles, workflow, every artifact (hash, size, the file it
    names), every job (tool, inputs, outputs, params, software versions, times, MLflow run)
    and every invocation. Returns the crate."""
    document = json.loads((folder / "lineage.json").read_text())
    crate = ROCrate(folder)
    root = crate.root_dataset
    assert {p["@id"] if isinstance(p, dict) else p.id for p in root["conformsTo"]} == set(PROFILES)
    workflow = root["mainEntity"]
    assert {"File", "SoftwareSourceCode", "ComputationalWorkflow", "HowTo"} <= set(workflow.type)
    assert (folder / workflow.id).resolve() == Path("Snakefile").resolve()
    assert workflow["programmingLanguage"]["name"] == "Snakemake"
    up = workflow.id.removesuffix("Snakefile")

    def file(path: str):
        entity = crate.get(f"{up}{path}")
        assert entity is not None and "File" in entity.type, path
        assert (folder / entity.id).resolve() == Path(path).resolve()  # names the very file
        return entity

    for artifact in document["artifacts"]:
        entity = file(artifact["path"])
        assert entity["sha256"] == artifact["sha256"], artifact["path"]
        assert int(entity["contentSize"]) == artifact["bytes"], artifact["path"]
    for name in ("lineage.json", "lineage.md"):
        own = crate.get(name)
        assert own is not None and int(own["contentSize"]) == (folder / name).stat().st_size

    for job in document["jobs"]:
        action = crate.get(f"#run/{job['job']}")
        assert action is not None and action.type == "CreateAction", job["job"]
        assert (action["startTime"], action["endTime"]) == (job["started"], job["ended"])
        assert action.get("identifier") == job["mlflow_run_id"]
        tool = action["instrument"]
        assert tool.type == "SoftwareApplication" and tool["name"] == f"sibnet {job['stage']}"
        versions = {s["name"]: s["version"] for s in tool["softwareRequirements"]}
        expected = {k: v for k, v in job["environment"]["packages"].items() if v}
        assert versions == expected | {"python": job["environment"]["python"]}
        step = crate.get(f"#step/{job['stage']}")
        assert tool.id in _ids(step["workExample"])
        assert crate.get(f"#control/{job['job']}")["object"].id == action.id
        objects = action["object"] if isinstance(action["object"], list) else [action["object"]]
        read = {e.id: e for e in objects if "File" in e.type}
        inputs = {
            p: s
            for e in [*job["inputs"].values(), job["params_file"]]
            for p, s in entry_files(e).items()
        }
        assert set(read) == {f"{up}{p}" for p in inputs}
        for path, sha in inputs.items():
            assert read[f"{up}{path}"]["sha256"] == sha, (job["job"], path)
        outputs = {p: s for e in job["outputs"].values() for p, s in entry_files(e).items()}
        assert sorted(_ids(action["result"])) == sorted(f"{up}{p}" for p in outputs)
        for entity in (
            action["result"] if isinstance(action["result"], list) else [action["result"]]
        ):
            assert entity["sha256"] == outputs[entity.id.removeprefix(up)]
        values = {e["name"]: e for e in objects if e.type == "PropertyValue"}
        assert set(values) == set(flatten(job["params"]))
        for key, value in flatten(job["params"]).items():
            shown = values[key]["value"]
            assert (
                shown == value or json.loads(shown) == value or (value is None and shown == "null")
            )
            assert values[key]["exampleOfWork"].id in _ids(tool["input"])

    runs = _ids(root["mentions"])
    assert len(runs) == len(document["invocations"])
    for run in (crate.get(i) for i in runs):
        assert run["instrument"].id == workflow.id
    return crate


def test_the_crate_holds_the_lineage(tree) -> None:  # noqa: F811
    _audit(tree)
    assert (AUDIT / CRATE_FILE).is_file()
    assert_crate_matches_lineage(AUDIT)


def test_the_crate_round_trips(tree, tmp_path_factory: pytest.TempPathFactory) -> None:  # noqa: F811
    """Read with the library and written again, the crate is the same JSON-LD graph."""
    _audit(tree)
    original = json.loads((AUDIT / CRATE_FILE).read_text())
    again = tmp_path_factory.mktemp("again")
    ROCrate(AUDIT).metadata.write(again)
    written = json.loads((again / CRATE_FILE).read_text())
    assert written["@context"] == original["@context"]

    def graph(document: dict) -> dict[str, dict]:
        return {entity["@id"]: entity for entity in document["@graph"]}

    assert graph(written) == graph(original)


def test_no_credential_reaches_the_crate(
    tree,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With MLflow credentials in the environment the crate holds none of them; a params value
    or command line that holds one stops the audit, and the audit folder is not written."""
    secret = "pw-3c1f9a0e77"
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", secret)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://alice:{secret}@127.0.0.1:9/")
    _audit(tree)
    text = (AUDIT / CRATE_FILE).read_text()
    assert secret not in text and "alice" not in text
    assert_crate_matches_lineage(AUDIT)

    before = (AUDIT / CRATE_FILE).read_bytes()
    record = Path(".sibnet/lineage/report/toy.json")
    entry = json.loads(record.read_text())
    entry["command"] += f" --tracking http://alice:{secret}@host"
    record.write_text(json.dumps(entry))
    with pytest.raises(CrateError, match="credential of the tracking store"):
        _audit(tree)
    assert (AUDIT / CRATE_FILE).read_bytes() == before


def test_jobs_of_one_stage_in_two_environments_get_two_tools(tree) -> None:  # noqa: F811
    """A train job re-run under another numpy: its stage's step lists both tools, each with
    the versions its jobs ran with."""
    record = Path(".sibnet/lineage/train/toy/sibnet/seed0.json")
    entry = json.loads(record.read_text())
    entry["environment"]["packages"]["numpy"] = "1.0.0-other"
    record.write_text(json.dumps(entry))
    _audit(tree)
    crate = assert_crate_matches_lineage(AUDIT)
    assert sorted(_ids(crate.get("#step/train")["workExample"])) == [
        "#tool/train",
        "#tool/train/env2",
    ]
    assert crate.get("#run/train/toy/sibnet/seed0")["instrument"].id == "#tool/train/env2"
