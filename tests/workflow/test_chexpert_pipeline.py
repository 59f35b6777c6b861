"""The whole DAG under Snakemake on a CheXpert-format fixture (CSV + JPEG + expert masks)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import yaml

from tests.data.chexpert_files import CLASSES, FOLDER, SENTINELS, write_chexpert
from tests.workflow.repo import TINY_PARAMS, clean_env, copy_repository, run

pytestmark = pytest.mark.slow

RUNS = [("baseline", 0), ("sibnet", 0)]


@pytest.fixture(scope="module")
def chexpert_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    copy = copy_repository(tmp_path_factory.mktemp("chexpert") / "repo")
    write_chexpert(copy / "raw", n_train=96, n_valid=32, size=64)
    params = yaml.safe_load(TINY_PARAMS.read_text())
    params["prepare"] = {
        "dataset": "cx",
        "source": "chexpert",
        "size": 64,
        "workers": 2,
        "shard_size": 40,
        "split": {"val": 0.2, "test": 0.25, "seed": 0},
        "chexpert": {
            "root": "raw",  # relative to the working directory: the repository root
            "train_csv": f"{FOLDER}/train.csv",
            "valid_csv": f"{FOLDER}/valid.csv",
            "classes": CLASSES,
            "uncertainty": "ignore",
            "lesion_masks": "raw/masks",
        },
    }
    params["segment"]["structures"] = []
    params["pipeline"]["seeds"] = [0]
    (copy / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    run(["snakemake", "--cores", "all"], copy, env=clean_env())
    return copy


def test_every_stage_runs_on_chexpert_data(chexpert_run: Path) -> None:
    manifest = pd.read_parquet(chexpert_run / "data/prepared/cx/manifest.parquet")
    assert set(manifest["split"]) == {"train", "val", "test"}
    assert (manifest["labels"].map(lambda v: -1 in v)).any()  # U-Ignore labels kept unknown
    for method, seed in RUNS:
        results = chexpert_run / f"results/cx/{method}/seed{seed}"
        metrics = json.loads((results / "metrics.json").read_text())
        assert 0.0 <= metrics["macro_auc"] <= 1.0
        saliency = pd.read_parquet(results / "saliency.parquet")
        assert len(saliency) > 0 and set(saliency["class"]) <= set(CLASSES)
        segmentation = json.loads((results / "segmentation.json").read_text())
        assert segmentation["skipped"] == "segment.structures is empty"
    summary = (chexpert_run / "results/report/summary.md").read_text()
    assert "Segmentation was not run" in summary
    assert "Saliency agreement" in summary
    assert set(json.loads((chexpert_run / "results/metrics.json").read_text())["clean_auc"]) == {
        "baseline",
        "sibnet",
    }


def test_no_output_holds_a_column_the_pipeline_does_not_need(chexpert_run: Path) -> None:
    folders = ["data/prepared", "models", "results", "logs", "mlartifacts"]
    files = [p for f in folders for p in (chexpert_run / f).rglob("*") if p.is_file()]
    files.append(chexpert_run / "mlflow.db")
    assert len(files) > 20
    assert chexpert_run / "results/audit/ro-crate-metadata.json" in files  # the crate too
    for path in files:
        data = path.read_bytes()
        for sentinel in SENTINELS:
            assert sentinel.encode() not in data, (path, sentinel)
