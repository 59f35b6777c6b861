"""``sibnet report`` on a synthetic results tree (no training: fast and exactly known)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from sibnet.cli import main
from sibnet.config import Params, validate_params
from sibnet.dag import MODELS, RESULTS, gathered, stage
from sibnet.files import write_npz
from sibnet.metrics.classification import macro_auc
from sibnet.stages.common import predictions_frame
from sibnet.stages.report import REPORT_FILES, ReportError, report

CLASSES = ["normal", "nodule", "effusion"]
SIGMAS = [0.0, 0.05, 0.1]
MODES = ["frozen", "finetune", "scratch"]
N = 60


def _params(methods: list[str], seeds: list[int]) -> Params:
    return validate_params(
        {
            "methods": {m: {"objective": "cross_entropy"} for m in methods},
            "pipeline": {"methods": methods, "seeds": seeds},
            "report": {"reference": methods[0], "bootstrap": 200},
            "robustness": {"sigmas": SIGMAS},
            "tracking": {"enabled": False},
        }
    )


def _path(root: Path, stage_name: str, output: str, method: str, seed: int) -> Path:
    base = root / ("models" if stage_name == "train" else "results") / "phantom"
    template = MODELS if stage_name == "train" else RESULTS
    path = base / gathered(stage(stage_name), template, output, method, seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def _write_run(root: Path, method: str, seed: int, skill: float) -> None:
    """One run's outputs: better ``skill`` separates the classes more, noise blurs them."""
    rng = np.random.default_rng(seed)
    ids = np.array([f"img-{i:03d}" for i in range(N)])
    targets = np.eye(len(CLASSES), dtype=np.int8)[np.arange(N) % len(CLASSES)]

    def probs(sigma: float) -> np.ndarray:
        logits = skill * targets + rng.normal(0, 1 + 10 * sigma, targets.shape)
        return np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)

    clean = probs(0.0)
    predictions_frame(ids, targets, clean, CLASSES).to_parquet(
        _path(root, "evaluate", "predictions", method, seed)
    )
    blocks = []
    for sigma in SIGMAS:
        block = predictions_frame(ids, targets, clean if sigma == 0 else probs(sigma), CLASSES)
        block.insert(0, "sigma", sigma)
        blocks.append(block)
    pd.concat(blocks).to_parquet(_path(root, "robustness", "predictions", method, seed))
    findings = [(i, CLASSES[i % 3]) for i in range(N) if i % 3]
    dice = np.clip(skill / 4 + rng.normal(0, 0.05, len(findings)), 0, 1)
    hd95 = rng.uniform(1, 20, len(findings))
    hd95[::7] = np.nan
    pd.DataFrame(
        {
            "method": method,
            "seed": seed,
            "id": [ids[i] for i, _ in findings],
            "class": [c for _, c in findings],
            "dice": dice,
            "hd95": hd95,
            "ssim": dice / 2,
            "dice_raw": dice,
            "pointing_hit": dice > 0.3,
            "empty_binarisation": False,
        }
    ).to_parquet(_path(root, "saliency", "saliency", method, seed))
    masks = np.zeros((2, 16, 16), dtype=bool)
    masks[:, 4:9, 4:9] = True
    write_npz(
        _path(root, "saliency", "examples", method, seed),
        {
            "image": rng.random((2, 16, 16), dtype=np.float32),
            "mask": masks,
            "saliency": rng.random((2, 16, 16), dtype=np.float32),
            "hull": masks,
            "id": ids[[1, 2]],
            "class": np.array(["nodule", "effusion"]),
        },
    )
    pd.DataFrame(
        {"epoch": [1, 2], "train_loss": [1.0, 0.8], "val_loss": [1.1, 0.9], "val_auc": [0.6, 0.7]}
    ).to_csv(_path(root, "train", "history", method, seed), index=False)
    structures = ["lung_left", "lung_right"]
    seg = pd.DataFrame(
        [
            {
                "method": method,
                "seed": seed,
                "mode": mode,
                "id": image_id,
                "structure": s,
                "dice": min(
                    1.0, skill / 4 + (0.1 if mode == "scratch" else 0.0) + rng.normal(0, 0.02)
                ),
                "hd95": rng.uniform(1, 5),
            }
            for mode in MODES
            for image_id in ids[:20]
            for s in structures
        ]
    )
    seg.to_parquet(_path(root, "segment", "segmentation", method, seed))
    truth = np.zeros((2, 2, 16, 16), dtype=bool)
    truth[:, 0, 2:8, 2:7] = truth[:, 1, 2:8, 9:14] = True
    write_npz(
        _path(root, "segment", "examples", method, seed),
        {
            "image": rng.random((2, 16, 16), dtype=np.float32),
            "truth": truth,
            **{f"pred_{mode}": truth for mode in MODES},
            "id": ids[[0, 1]],
            "structures": np.array(structures),
        },
    )


def _report(params: Params, root: Path) -> dict:
    return report(
        params,
        results=root / "results/phantom",
        models=root / "models/phantom",
        report=root / "results/report",
        metrics=root / "results/metrics.json",
        noise_plot=root / "results/plots/auc_vs_noise.csv",
        saliency_plot=root / "results/plots/saliency.csv",
    )


@pytest.fixture(scope="module")
def reported(tmp_path_factory: pytest.TempPathFactory) -> tuple[Params, Path, dict]:
    root = tmp_path_factory.mktemp("report")
    for method, skill in (("plain", 1.0), ("better", 3.0)):
        for seed in (0, 1):
            _write_run(root, method, seed, skill)
    params = _params(["plain", "better"], [0, 1])
    return params, root, _report(params, root)


def test_a_missing_run_output_is_named_with_the_stage_that_writes_it(reported) -> None:
    _, root, _ = reported
    with pytest.raises(ReportError, match=r"plain/seed5/predictions\.parquet: missing.*evaluate"):
        _report(_params(["plain", "better"], [0, 5]), root)


def test_clean_auc_is_the_mean_over_seeds_with_a_paired_delta(reported) -> None:
    _, root, metrics = reported
    aucs = {}
    for method in ("plain", "better"):
        values = []
        for seed in (0, 1):
            frame = pd.read_parquet(_path(root, "evaluate", "predictions", method, seed))
            probs = frame[[f"prob_{c}" for c in CLASSES]].to_numpy()
            values.append(macro_auc(probs, np.array(frame["labels"].tolist())))
        aucs[method] = np.mean(values)
    better = metrics["clean_auc"]["better"]
    assert better["mean"] == pytest.approx(aucs["better"], abs=1e-6)
    assert better["delta"] == pytest.approx(aucs["better"] - aucs["plain"], abs=1e-6)
    assert better["ci_low"] <= better["mean"] <= better["ci_high"]
    assert better["delta_ci_low"] > 0  # skill 3 vs 1 on 60 images: clearly better
    plain = metrics["clean_auc"]["plain"]
    assert plain["delta"] == 0 and plain["delta_ci_low"] == plain["delta_ci_high"] == 0
    assert plain["sd"] is not None  # two seeds
    stored = json.loads((root / "results/metrics.json").read_text())
    assert stored == metrics


def test_noise_auc_at_zero_equals_the_clean_auc_and_falls_with_sigma(reported) -> None:
    _, _, metrics = reported
    for method in ("plain", "better"):
        curve = metrics["noise_auc"][method]
        assert set(curve) == {f"sigma_{s:g}" for s in SIGMAS}
        assert curve["sigma_0"]["mean"] == metrics["clean_auc"][method]["mean"]
    assert (
        metrics["noise_auc"]["better"]["sigma_0.1"]["mean"] < metrics["clean_auc"]["better"]["mean"]
    )


def test_saliency_table_pools_seeds_per_map(reported) -> None:
    _, root, metrics = reported
    rows = pd.concat(
        pd.read_parquet(_path(root, "saliency", "saliency", "better", s)) for s in (0, 1)
    )
    per_map = rows.groupby(["id", "class"])["dice"].mean()
    assert metrics["saliency"]["better"]["dice"]["mean"] == pytest.approx(per_map.mean(), 1e-6)
    hd95 = rows.groupby(["id", "class"])["hd95"].mean()  # NaN-skipping mean over seeds
    assert metrics["saliency"]["better"]["hd95"]["mean"] == pytest.approx(hd95.mean(), 1e-6)
    assert metrics["saliency"]["better"]["dice"]["delta_ci_low"] > 0


def test_report_folder_summary_and_plot_data(reported) -> None:
    _, root, _ = reported
    folder = root / "results/report"
    assert {p.name for p in folder.iterdir()} == set(REPORT_FILES)
    summary = (folder / "summary.md").read_text()
    assert "2 methods × 2 seed(s) (0, 1)" in summary
    assert "| better | 2 |" in summary and "higher" in summary
    inputs = [line for line in summary.splitlines() if line.startswith("| `")]
    # Per method: 5 files per seed (predictions, noisy predictions, saliency, segmentation,
    # history), plus the saliency and segmentation examples of the first seed.
    assert "## Inputs" in summary and len(inputs) == 2 * (2 * 5 + 2)
    for png in folder.glob("*.png"):
        assert png.read_bytes().startswith(b"\x89PNG")
    noise = pd.read_csv(root / "results/plots/auc_vs_noise.csv")
    assert noise.columns.tolist() == ["sigma", "plain", "better"]
    assert noise["sigma"].tolist() == SIGMAS
    bars = pd.read_csv(root / "results/plots/saliency.csv")
    assert bars["method"].tolist() == ["plain", "better"]


def test_segmentation_table_per_mode_with_paired_deltas(reported) -> None:
    _, root, metrics = reported
    better = metrics["segmentation"]["better"]
    assert set(better) == set(MODES)
    rows = pd.concat(
        pd.read_parquet(_path(root, "segment", "segmentation", "better", s)) for s in (0, 1)
    )
    frozen = rows[rows["mode"] == "frozen"].groupby(["id", "structure"])["dice"].mean()
    assert better["frozen"]["dice"]["mean"] == pytest.approx(frozen.mean(), abs=1e-6)
    assert better["frozen"]["dice"]["delta_ci_low"] > 0  # skill 3 vs 1
    summary = (root / "results/report/summary.md").read_text()
    assert "## Segmentation from the classifiers' encoders" in summary
    assert "| better | scratch | 2 |" in summary


def test_report_is_deterministic(reported, tmp_path: Path) -> None:
    params, root, _ = reported
    first = {p.name: p.read_bytes() for p in (root / "results/report").iterdir()}
    _report(params, root)
    second = {p.name: p.read_bytes() for p in (root / "results/report").iterdir()}
    assert first == second


def test_runs_scored_on_other_images_are_refused(reported, tmp_path: Path) -> None:
    import shutil

    params, root, _ = reported
    copy = tmp_path / "copy"
    shutil.copytree(root, copy)
    path = _path(copy, "evaluate", "predictions", "better", 1)
    frame = pd.read_parquet(path)
    frame.iloc[:-1].to_parquet(path)
    with pytest.raises(ReportError, match="other test images"):
        _report(params, copy)


def test_cli_reports_a_missing_run_output_and_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import yaml

    params_file = tmp_path / "params.yaml"
    params_file.write_text(yaml.safe_dump(_params(["plain"], [0]).model_dump(mode="json")))
    argv = ["report", "--params", str(params_file)]
    for option, path in (
        ("results", "results/phantom"),
        ("models", "models/phantom"),
        ("report", "results/report"),
        ("metrics", "results/metrics.json"),
        ("noise_plot", "results/plots/a.csv"),
        ("saliency_plot", "results/plots/b.csv"),
    ):
        argv += [f"--{option}", str(tmp_path / path)]
    assert main(argv) == 2
    error = capsys.readouterr().err
    assert "plain/seed0/predictions.parquet: missing" in error and "sibnet evaluate" in error
    assert not (tmp_path / "results/report").exists()
