from __future__ import annotations

from pathlib import Path

import pytest

from sibnet.config import Params
from sibnet.data.prepared import PreparedDataset, PreparedWriter
from sibnet.stages.prepare import prepare
from tests.conftest import untracked


def test_prepare_is_deterministic(tiny_params: Params, prepared_tiny: Path, tmp_path: Path) -> None:
    params = untracked(tiny_params)
    again = tmp_path / "tiny"
    prepare(params, prepared=again)
    for path in sorted(p.relative_to(prepared_tiny) for p in prepared_tiny.rglob("*.*")):
        assert (again / path).read_bytes() == (prepared_tiny / path).read_bytes(), path


def test_failed_prepare_keeps_the_previous_output(
    tiny_params: Params, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    params = untracked(tiny_params)
    out = tmp_path / "tiny"
    prepare(params, prepared=out)
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}

    def broken_close(writer: PreparedWriter) -> None:
        (writer.root / "manifest.parquet").write_bytes(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(PreparedWriter, "close", broken_close)
    with pytest.raises(OSError, match="disk full"):
        prepare(params, prepared=out)
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny"]
    PreparedDataset.open(out)


def test_shortcut_marker_is_recorded(tiny_params: Params, tmp_path: Path) -> None:
    params = untracked(tiny_params)
    raw = params.model_dump(mode="json")
    raw["prepare"]["phantom"] |= {"shortcut_class": "nodule", "shortcut_rate": 1.0}
    from sibnet.config import validate_params

    out = tmp_path / "shortcut"
    dataset = prepare(validate_params(raw), prepared=out)
    manifest = dataset.manifest
    nodule = dataset.labels[:, dataset.classes.index("nodule")] == 1
    trainval = manifest["split"].to_numpy() != "test"
    assert manifest["shortcut"].to_numpy()[trainval & nodule].all()
    assert not manifest["shortcut"].to_numpy()[trainval & ~nodule].any()


@pytest.mark.parametrize(
    ("source", "section", "key"),
    [
        ("medmnist", {"path": "missing.npz"}, "prepare.medmnist.path"),
        ("folder", {"root": "missing", "classes": ["a"]}, "prepare.folder.root"),
        ("folder", {"root": ".", "csv": "missing.csv", "classes": ["a"]}, "prepare.folder.csv"),
        ("chexpert", {"root": "missing"}, "prepare.chexpert.root"),
    ],
)
def test_configuration_errors_open_no_run(
    source: str,
    section: dict,
    key: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A file or folder the params name but that is not there is a configuration error naming
    the key, raised before the MLflow run is opened (so no FAILED run is left behind)."""
    import mlflow

    from sibnet.config import ParamsError, validate_params

    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store)
    monkeypatch.chdir(tmp_path)
    raw = {
        "prepare": {"source": source, source: section},
        "segment": {"structures": []},
        "tracking": {"enabled": True, "experiment": "misconfigured"},
    }
    with pytest.raises(ParamsError, match=rf"^{key}") as caught:
        prepare(validate_params(raw), prepared=tmp_path / "out")
    assert "configuration error" in str(caught.value)
    assert "skip-invalid" not in str(caught.value) and "skip_invalid" not in str(caught.value)
    assert not (tmp_path / "out").exists()
    assert mlflow.MlflowClient(store).get_experiment_by_name("misconfigured") is None
