from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from sibnet.config import Params, validate_params
from sibnet.data.prepared import PreparedError
from sibnet.models.classifier import CheckpointError, load_checkpoint
from sibnet.stages.evaluate import evaluate
from sibnet.stages.train import class_weights, history_columns, train
from tests.conftest import untracked, with_changes


def _train(
    params: Params, prepared: Path, folder: Path, seed: int = 0, method: str = "baseline"
) -> pd.DataFrame:
    return train(
        params,
        prepared=prepared,
        checkpoint=folder / "classifier.pt",
        history=folder / "history.csv",
        method=method,
        seed=seed,
    )


def test_train_writes_a_self_describing_checkpoint(
    tiny_params: Params, prepared_tiny: Path, trained_tiny: Path
) -> None:
    history = pd.read_csv(trained_tiny.parent / "history.csv")
    assert list(history.columns) == history_columns(("task",))
    assert "train_cd" not in history  # a cross-entropy method has no SIBnet terms
    assert list(history["epoch"]) == [1, 2]
    _, meta = load_checkpoint(trained_tiny, architecture="resnet10_small")
    assert meta["epoch"] == int(history.loc[history["val_auc"].idxmax(), "epoch"])
    assert meta["metrics"]["val_auc"] == pytest.approx(history["val_auc"].max(), abs=1e-6)
    assert meta["classes"] == ["normal", "nodule", "effusion", "cardiomegaly"]
    assert meta["extra"]["method"] == "baseline" and meta["extra"]["seed"] == 0
    assert len(meta["params_sha256"]) == 64


def test_same_params_give_identical_outputs(
    tiny_params: Params, prepared_tiny: Path, trained_tiny: Path, tmp_path: Path
) -> None:
    _train(untracked(tiny_params), prepared_tiny, tmp_path)
    assert (tmp_path / "classifier.pt").read_bytes() == trained_tiny.read_bytes()
    assert (tmp_path / "history.csv").read_bytes() == (
        trained_tiny.parent / "history.csv"
    ).read_bytes()


def test_data_loader_workers_change_nothing(
    tiny_params: Params, prepared_tiny: Path, tmp_path: Path
) -> None:
    params = with_changes(untracked(tiny_params), train={"epochs": 1})
    _train(params, prepared_tiny, tmp_path / "main")
    workers = with_changes(params, train={"num_workers": 2})
    _train(workers, prepared_tiny, tmp_path / "workers")
    assert (tmp_path / "workers/history.csv").read_bytes() == (
        tmp_path / "main/history.csv"
    ).read_bytes()
    main_state = load_checkpoint(tmp_path / "main/classifier.pt")[1]["state_dict"]
    worker_state = load_checkpoint(tmp_path / "workers/classifier.pt")[1]["state_dict"]
    assert all(torch.equal(main_state[k], worker_state[k]) for k in main_state)


def test_another_seed_gives_another_model(
    tiny_params: Params, prepared_tiny: Path, trained_tiny: Path, tmp_path: Path
) -> None:
    params = with_changes(untracked(tiny_params), train={"epochs": 1})
    _train(params, prepared_tiny, tmp_path, seed=1)
    assert (tmp_path / "classifier.pt").read_bytes() != trained_tiny.read_bytes()


def test_class_weights() -> None:
    labels = np.eye(3, dtype=np.int8)[[0, 0, 0, 1]]
    np.testing.assert_allclose(class_weights(labels, "multiclass"), [4 / 9, 4 / 3, 1.0])
    multi = np.array([[1, 0], [1, 0], [0, 0], [1, 1]])
    np.testing.assert_allclose(class_weights(multi, "multilabel"), [1 / 3, 3.0])


@pytest.mark.parametrize("class_weighted", [False, True])
def test_multilabel_training(tiny_params: Params, tmp_path: Path, class_weighted: bool) -> None:
    from sibnet.stages.prepare import prepare

    raw = untracked(tiny_params).model_dump(mode="json")
    raw["prepare"]["phantom"] |= {"mode": "multilabel", "n_images": 60, "prevalence": 0.4}
    raw["train"] |= {"epochs": 1, "class_weights": class_weighted}
    params = validate_params(raw)
    prepared = prepare(params, prepared=tmp_path / "ml").root
    _train(params, prepared, tmp_path)
    result = evaluate(
        params,
        prepared=prepared,
        checkpoint=tmp_path / "classifier.pt",
        metrics=tmp_path / "metrics.json",
        predictions=tmp_path / "p.parquet",
        method="baseline",
        seed=0,
    )
    assert result["n_images"] == len(pd.read_parquet(tmp_path / "p.parquet"))
    assert set(result["per_class_auc"]) == {"nodule", "effusion", "cardiomegaly"}


def test_evaluate_writes_metrics_and_predictions(
    tiny_params: Params, prepared_tiny: Path, trained_tiny: Path, tmp_path: Path
) -> None:
    result = evaluate(
        untracked(tiny_params),
        prepared=prepared_tiny,
        checkpoint=trained_tiny,
        metrics=tmp_path / "metrics.json",
        predictions=tmp_path / "predictions.parquet",
        method="baseline",
        seed=0,
    )
    stored = json.loads((tmp_path / "metrics.json").read_text())
    assert stored == result
    assert 0.0 <= stored["macro_auc"] <= 1.0
    assert stored["macro_auc_ci"][0] <= stored["macro_auc"] <= stored["macro_auc_ci"][1]
    assert {"accuracy", "balanced_accuracy", "per_class_auc", "n_images"} <= set(stored)
    predictions = pd.read_parquet(tmp_path / "predictions.parquet")
    assert len(predictions) == stored["n_images"]
    probs = predictions.filter(like="prob_").to_numpy()
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)


def test_evaluate_refuses_a_checkpoint_of_another_architecture(
    tiny_params: Params, prepared_tiny: Path, trained_tiny: Path, tmp_path: Path
) -> None:
    params = with_changes(
        untracked(tiny_params),
        methods={"baseline": {"architecture": "resnet18"}},
    )
    metrics = tmp_path / "metrics.json"
    metrics.write_text("{}")
    with pytest.raises(CheckpointError, match="'resnet10_small' network, but 'resnet18'"):
        evaluate(
            params,
            prepared=prepared_tiny,
            checkpoint=trained_tiny,
            metrics=metrics,
            predictions=tmp_path / "p.parquet",
            method="baseline",
            seed=0,
        )
    assert metrics.read_text() == "{}"  # the earlier output is untouched
    assert not (tmp_path / "p.parquet").exists()


def test_train_stops_on_a_damaged_dataset_before_overwriting(
    tiny_params: Params, prepared_tiny: Path, trained_tiny: Path, tmp_path: Path
) -> None:
    damaged = tmp_path / "damaged"
    shutil.copytree(prepared_tiny, damaged)
    np.save(damaged / "images" / "shard-00000.npy", np.zeros((1, 1, 64, 64), np.uint8))
    folder = tmp_path / "model"
    folder.mkdir()
    shutil.copy(trained_tiny, folder / "classifier.pt")
    with pytest.raises(PreparedError, match=r"shard-00000\.npy: array is uint8"):
        _train(untracked(tiny_params), damaged, folder)
    assert (folder / "classifier.pt").read_bytes() == trained_tiny.read_bytes()
    assert not (folder / "history.csv").exists()


def test_training_is_logged_to_mlflow(
    tiny_params: Params, prepared_tiny: Path, tmp_path: Path, mlflow_uri: str
) -> None:
    from mlflow.tracking import MlflowClient

    params = with_changes(tiny_params, train={"epochs": 2}, tracking={"experiment": "t-train"})
    _train(params, prepared_tiny, tmp_path, seed=3)
    client = MlflowClient(tracking_uri=mlflow_uri)
    experiment = client.get_experiment_by_name("t-train")
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.status == "FINISHED"
    tags = run.data.tags
    assert tags["sibnet.stage"] == "train" and tags["sibnet.method"] == "baseline"
    assert tags["sibnet.seed"] == "3" and tags["sibnet.dataset"] == "tiny"
    assert len(tags["sibnet.git_commit"]) in (40, 7) or tags["sibnet.git_commit"] == "unknown"
    assert run.data.params["train.epochs"] == "2"
    assert run.data.params["method.architecture"] == "resnet10_small"
    history = client.get_metric_history(run.info.run_id, "val_auc")
    assert [m.step for m in history] == [1, 2]
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"classifier.pt", "history.csv", "training_curves.png"} <= artifacts


def test_predictions_use_eval_mode(trained_tiny: Path) -> None:
    model, _ = load_checkpoint(trained_tiny)
    x = torch.rand(4, 1, 64, 64)
    with torch.no_grad():
        assert torch.equal(model(x), model(x))


def test_sibnet_method_logs_every_loss_term(
    tiny_params: Params, prepared_tiny: Path, tmp_path: Path, mlflow_uri: str
) -> None:
    from mlflow.tracking import MlflowClient

    params = with_changes(tiny_params, train={"epochs": 2}, tracking={"experiment": "t-sibnet"})
    history = _train(params, prepared_tiny, tmp_path, method="sibnet")
    assert history[["train_task", "train_cd", "train_sc"]].notna().all().all()
    _, meta = load_checkpoint(tmp_path / "classifier.pt", attention="se")
    assert set(meta["extra"]["term_scales"]) == {"cd", "sc"}
    client = MlflowClient(tracking_uri=mlflow_uri)
    (run,) = client.search_runs([client.get_experiment_by_name("t-sibnet").experiment_id])
    for name in ("train_task", "train_cd", "train_sc", "train_loss"):
        assert [m.step for m in client.get_metric_history(run.info.run_id, name)] == [1, 2]
    assert run.data.params["method.objective"] == "sibnet"
    assert run.data.params["method.lambda_cd"] == "1.2"


@pytest.mark.parametrize(
    ("method", "changes"),
    [
        ("sibnet", {"precision": "bf16"}),
        ("baseline", {"precision": "bf16"}),
        ("sibnet", {"channels_last": True}),
    ],
)
def test_bf16_and_channels_last_train_on_the_cpu(
    tiny_params: Params, prepared_tiny: Path, tmp_path: Path, method: str, changes: dict
) -> None:
    params = with_changes(untracked(tiny_params), train={"epochs": 1, **changes})
    history = _train(params, prepared_tiny, tmp_path, method=method)
    losses = history[["train_loss", "train_task", "val_loss"]].to_numpy()
    assert len(history) == 1 and np.isfinite(losses).all()
    if method == "sibnet":
        assert np.isfinite(history[["train_cd", "train_sc"]].to_numpy()).all()
    _, meta = load_checkpoint(tmp_path / "classifier.pt")
    assert meta["params_sha256"] and all(
        torch.isfinite(v).all() for v in meta["state_dict"].values() if v.is_floating_point()
    )


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is visible")
def test_cuda_without_a_gpu_is_a_clear_error(
    tiny_params: Params, prepared_tiny: Path, tmp_path: Path
) -> None:
    params = with_changes(untracked(tiny_params), train={"device": "cuda"})
    with pytest.raises(ValueError, match=r"train\.device is 'cuda' but torch\.cuda\.is_available"):
        _train(params, prepared_tiny, tmp_path)
    assert not any(tmp_path.iterdir())


def test_history_takes_its_term_columns_from_the_objective(
    tiny_params: Params, prepared_tiny: Path, tmp_path: Path
) -> None:
    """A faithfulness method with a one-epoch delay: its own columns, empty while it is off."""
    method = {
        "objective": "sibnet",
        "lambda_cd": 0.5,
        "lambda_sc": 0.0,
        "lambda_faith": 0.5,
        "warmup": "delay",
        "warmup_epochs": 1,
    }
    params = with_changes(untracked(tiny_params), train={"epochs": 2})
    raw = params.model_dump(mode="json")
    raw["methods"]["faithful"] = method
    params = validate_params(raw)
    history = _train(params, prepared_tiny, tmp_path, method="faithful")
    assert list(history.columns) == history_columns(("task", "cd", "faith"))
    assert history.loc[0, ["train_cd", "train_faith"]].isna().all()  # warm-up: terms off
    assert history.loc[1, ["train_cd", "train_faith"]].notna().all()
    _, meta = load_checkpoint(tmp_path / "classifier.pt")
    assert meta["extra"]["terms"] == ["task", "cd", "faith"]
    assert set(meta["extra"]["term_scales"]) == {"cd", "faith"}
