"""The CheXpert adapter on a fixture written in CheXpert's real format (CSV + JPEG + masks)."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from sibnet.config import Params, ParamsError, validate_params
from sibnet.data.images import fit_mask, read_mask
from sibnet.data.ingest import work_folder
from sibnet.data.prepared import PreparedDataset
from sibnet.data.problems import DataError
from sibnet.stages.prepare import prepare
from tests.data.chexpert_files import (
    CLASSES,
    FOLDER,
    SENTINELS,
    ChexpertFixture,
    write_chexpert,
    write_table,
)
from tests.data.image_files import corrupt, truncate, write_mask_png


def _params(fixture: ChexpertFixture, workers: int = 1, **chexpert: object) -> Params:
    return validate_params(
        {
            "prepare": {
                "dataset": "cx",
                "source": "chexpert",
                "size": 48,
                "workers": workers,
                "shard_size": 16,
                "chexpert": fixture.params(**chexpert),
            },
            "segment": {"structures": []},
            "tracking": {"enabled": False},
        }
    )


@pytest.fixture(scope="module")
def fixture(tmp_path_factory: pytest.TempPathFactory) -> ChexpertFixture:
    return write_chexpert(tmp_path_factory.mktemp("chexpert"))


@pytest.fixture(scope="module")
def prepared(fixture: ChexpertFixture, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("out") / "cx"
    prepare(_params(fixture, workers=2, uncertainty="ignore"), prepared=out)
    return out


def _files(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_splits_follow_the_tables_and_patients(fixture: ChexpertFixture, prepared: Path) -> None:
    dataset = PreparedDataset.open(prepared)
    manifest = dataset.manifest
    frontal_valid = [r for r in fixture.valid_rows if r["Frontal/Lateral"] == "Frontal"]
    frontal_train = [r for r in fixture.train_rows if r["Frontal/Lateral"] == "Frontal"]
    assert (manifest["split"] == "test").sum() == len(frontal_valid)
    assert manifest["split"].isin(["train", "val"]).sum() == len(frontal_train)
    assert set(manifest.loc[manifest.split == "test", "source"]) == {
        r["Path"] for r in frontal_valid
    }
    assert (manifest["split"] == "val").sum() > 0
    by_patient = manifest.groupby("patient_id")["split"].nunique()
    assert (by_patient == 1).all()
    assert all(p.startswith("patient") for p in manifest["patient_id"])
    assert dataset.meta["source"]["lateral_left_out"] == fixture.lateral > 0
    assert dataset.classes == CLASSES
    assert dataset.task == "multilabel"
    assert dataset.image_size == (48, 48)


@pytest.mark.parametrize(("policy", "uncertain"), [("ones", 1), ("zeros", 0), ("ignore", -1)])
def test_labels_follow_the_uncertainty_policy(
    fixture: ChexpertFixture, tmp_path: Path, policy: str, uncertain: int
) -> None:
    out = tmp_path / "cx"
    prepare(_params(fixture, uncertainty=policy), prepared=out)
    dataset = PreparedDataset.open(out)
    rows = {r["Path"]: r for r in fixture.train_rows + fixture.valid_rows}
    expected = {"1.0": 1, "0.0": 0, "": 0, "-1.0": uncertain}
    seen_uncertain = False
    for source, labels in zip(dataset.manifest["source"], dataset.labels, strict=True):
        values = [rows[source][c] for c in CLASSES]
        seen_uncertain |= "-1.0" in values
        assert labels.tolist() == [expected[v] for v in values]
    assert seen_uncertain


def test_sources_hashes_and_masks(fixture: ChexpertFixture, prepared: Path) -> None:
    dataset = PreparedDataset.open(prepared)
    manifest = dataset.manifest
    for source, digest in zip(manifest["source"][:5], manifest["source_sha256"][:5], strict=True):
        assert not Path(source).is_absolute()
        assert digest == hashlib.sha256((fixture.root / source).read_bytes()).hexdigest()
    annotated = np.flatnonzero(manifest["has_lesion_masks"].to_numpy())
    assert len(annotated) > 0
    assert set(manifest["split"].iloc[annotated]) == {"test"}
    masks = dataset.lesion_masks(annotated)
    for k, row in enumerate(annotated):
        stem = Path(manifest["source"].iloc[row]).with_suffix("")
        for c, name in enumerate(CLASSES):
            file = fixture.masks / stem / f"{name}.png"
            if file.is_file():
                expected = fit_mask(read_mask(file)[0], (48, 48), "pad")
                np.testing.assert_array_equal(masks[k, c], expected)
            else:
                assert not masks[k, c].any()
    assert not dataset.lesion_masks(np.flatnonzero(~manifest["has_lesion_masks"])).any()


def test_unneeded_columns_never_reach_an_output(
    fixture: ChexpertFixture, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = tmp_path / "mlflow"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{store / 'mlflow.db'}")
    store.mkdir()
    raw = _params(fixture).model_dump(mode="json")
    raw["tracking"] = {"enabled": True, "experiment": "sentinel"}
    out = tmp_path / "cx"
    prepare(validate_params(raw), prepared=out)
    written = [p for root in (out, store) for p in root.rglob("*") if p.is_file()]
    assert any(p.name == "mlflow.db" for p in written)
    for path in written:
        data = path.read_bytes()
        for sentinel in SENTINELS:
            assert sentinel.encode() not in data, (path, sentinel)
    manifest = pd.read_parquet(out / "manifest.parquet")
    assert not {"Sex", "Age", "AP/PA"} & set(manifest.columns)


def test_output_is_byte_identical_across_runs_and_worker_counts(
    fixture: ChexpertFixture, prepared: Path, tmp_path: Path
) -> None:
    again = tmp_path / "cx"
    prepare(_params(fixture, workers=1, uncertainty="ignore"), prepared=again)
    assert _files(again) == _files(prepared)
    assert not work_folder(again).exists()


def _copy(fixture: ChexpertFixture, tmp_path: Path) -> ChexpertFixture:
    root = tmp_path / "raw"
    shutil.copytree(fixture.root, root)
    return ChexpertFixture(
        root, root / "masks", list(fixture.train_rows), list(fixture.valid_rows), fixture.lateral
    )


def _break(fixture: ChexpertFixture) -> dict[str, int]:
    """Damage the fixture in every way the adapter must catch; returns reason → row."""
    train = fixture.train_rows
    frontal = [i for i, r in enumerate(train) if r["Frontal/Lateral"] == "Frontal"]
    rows = {}
    i = frontal[0]
    train[i] = {**train[i], "Edema": "maybe"}  # not a class here: ignored
    train[i] = {**train[i], "Cardiomegaly": "2.0"}
    rows["unknown label value"] = i + 1
    i = frontal[1]
    train[i] = {**train[i], "Path": train[i]["Path"].replace("view1", "view9")}
    rows["not found"] = i + 1
    i = frontal[2]
    train[i] = {**train[i], "Path": "../outside/patient00099/study1/view1_frontal.jpg"}
    rows["escapes the data root"] = i + 1
    i = frontal[3]
    train[i] = {**train[i], "Path": "/abs/patient00098/study1/view1_frontal.jpg"}
    rows["is absolute"] = i + 1
    i = frontal[4]
    train.append(dict(train[i]))
    rows["duplicate image path"] = len(train)
    i = frontal[5]
    corrupt(fixture.root / train[i]["Path"])
    rows[train[i]["Path"] + ": "] = i + 1
    i = frontal[6]
    truncate(fixture.root / train[i]["Path"], keep=0.4)
    rows["truncated"] = i + 1
    write_table(fixture.root / FOLDER / "train.csv", train)
    valid = fixture.valid_rows
    valid[0] = {**valid[0], "Pleural Effusion": "-1.0"}
    stem = Path(valid[1]["Path"]).with_suffix("")
    write_mask_png(fixture.masks / stem / "Cardiomegaly.png", np.ones((10, 10), bool))
    crossing = f"{FOLDER}/valid/patient00010/study1/view1_frontal.jpg"  # a train patient
    (fixture.root / crossing).parent.mkdir(parents=True)
    shutil.copyfile(fixture.root / train[frontal[7]]["Path"], fixture.root / crossing)
    valid.append({**valid[-1], "Path": crossing, "Frontal/Lateral": "Frontal"})
    write_table(fixture.root / FOLDER / "valid.csv", valid)
    return rows


def test_every_problem_is_reported_together_and_nothing_written(
    fixture: ChexpertFixture, tmp_path: Path
) -> None:
    broken = _copy(fixture, tmp_path)
    rows = _break(broken)
    out = tmp_path / "cx"
    with pytest.raises(DataError) as caught:
        prepare(_params(broken, uncertainty="ignore"), prepared=out)
    problems = caught.value.problems
    text = "\n".join(map(str, problems))
    for reason, row in rows.items():
        assert any(reason in p.reason and p.row == row for p in problems), (reason, row, text)
    assert any("uncertain (-1) in the test table" in p.reason and p.row == 1 for p in problems)
    assert any("is 10×10, but its image is 64×64" in p.reason for p in problems), text
    assert any("also in" in p.reason and p.file.endswith("valid.csv") for p in problems), text
    assert all(p.file.endswith(".csv") for p in problems)
    assert not out.exists()
    assert "--skip-invalid" in str(caught.value)
    for sentinel in SENTINELS:
        assert sentinel not in text


def test_skip_invalid_writes_the_rest_and_a_rejects_report(
    fixture: ChexpertFixture, tmp_path: Path
) -> None:
    broken = _copy(fixture, tmp_path)
    rows = _break(broken)
    out = tmp_path / "cx"
    prepare(_params(broken, uncertainty="ignore"), prepared=out, skip_invalid=True)
    rejects = pd.read_csv(out / "rejects.csv")
    assert list(rejects.columns) == ["file", "row", "reason"]
    assert set(rows.values()) <= set(rejects["row"])
    dataset = PreparedDataset.open(out)
    assert dataset.meta["source"]["rejected_rows"] == len(rejects)
    frontal = sum(r["Frontal/Lateral"] == "Frontal" for r in broken.train_rows + broken.valid_rows)
    assert len(dataset) == frontal - len(rejects)


def test_missing_columns_and_empty_splits_are_errors(
    fixture: ChexpertFixture, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store)
    broken = _copy(fixture, tmp_path)
    raw = _params(broken).model_dump(mode="json")
    raw["tracking"] = {"enabled": True, "experiment": "misconfigured"}

    def fails(error: type[Exception], match: str, out: str, **chexpert: str) -> str:
        changed = {**raw, "prepare": {**raw["prepare"]}}
        changed["prepare"]["chexpert"] = {**raw["prepare"]["chexpert"], **chexpert}
        with pytest.raises(error, match=match) as caught:
            prepare(validate_params(changed), prepared=tmp_path / out)
        assert "--skip-invalid" not in str(caught.value)
        assert not (tmp_path / out).exists()
        return str(caught.value)

    write_table(broken.root / FOLDER / "valid.csv", [])
    fails(DataError, "the test split is empty: .*valid.csv", "a")
    import mlflow

    client = mlflow.MlflowClient(store)
    experiment = client.get_experiment_by_name("misconfigured")
    assert len(client.search_runs([experiment.experiment_id])) == 1  # a data problem: in the run
    raw["tracking"]["experiment"] = "misconfigured-params"  # from here: no run at all

    (broken.root / FOLDER / "valid.csv").write_text("Path,Sex\nx.jpg,F\n")
    message = fails(ParamsError, r"valid.csv \(prepare.chexpert.valid_csv\) lacks column", "b")
    assert "  - prepare.chexpert.valid_csv: 'Frontal/Lateral'" in message
    assert "  - prepare.chexpert.classes: 'Pleural Effusion'" in message
    assert "its columns are ['Path', 'Sex']" in message
    (broken.root / FOLDER / "valid.csv").unlink()
    fails(ParamsError, r"^prepare.chexpert.valid_csv: the label table .* not found", "c")
    fails(ParamsError, r"^prepare.chexpert.root = .*: folder not found", "d", root="nowhere")
    fails(
        ParamsError,
        r"^prepare.chexpert.lesion_masks = .*: folder not found",
        "e",
        lesion_masks=str(tmp_path / "no-masks"),
    )
    assert client.get_experiment_by_name("misconfigured-params") is None


def test_default_classes_are_the_competition_five(fixture: ChexpertFixture, tmp_path: Path) -> None:
    raw = _params(fixture, lesion_masks=None).model_dump(mode="json")
    del raw["prepare"]["chexpert"]["classes"]
    params = validate_params(raw)
    assert params.prepare.chexpert.classes == [
        "Atelectasis",
        "Cardiomegaly",
        "Consolidation",
        "Edema",
        "Pleural Effusion",
    ]
    prepare(params, prepared=tmp_path / "cx")
    dataset = PreparedDataset.open(tmp_path / "cx")
    assert dataset.classes == params.prepare.chexpert.classes
    assert (dataset.labels[:, 0] == 0).all()  # Atelectasis: blank in the fixture → 0
