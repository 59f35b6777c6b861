"""``sibnet report`` on a synthetic results tree (no training: fast and exactly known)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from sibnet.cli import main
from sibnet.config import Params, ParamsError, validate_params
from sibnet.dag import MODELS, RESULTS, gathered, stage
from sibnet.files import write_json, write_npz
from sibnet.metrics.classification import macro_auc
from sibnet.metrics.comparison import COMPARISON_COLUMNS
from sibnet.predictions import predictions_frame
from sibnet.report.common import compare
from sibnet.report.section import ReportFile, Section, SectionOutput
from sibnet.report.sections import SECTIONS
from sibnet.stages.report import CONDITIONAL_FILES, REPORT_FILES, ReportError, report
from sibnet.stages.saliency import NOTHING_TO_SCORE, SALIENCY_COLUMNS
from sibnet.stages.segment import (
    SEGMENTATION_COLUMNS,
    SEGMENTATION_DTYPES,
    SKIPPED_NO_STRUCTURES,
)

CLASSES = ["normal", "nodule", "effusion"]
SIGMAS = [0.0, 0.05, 0.1]
MODES = ["frozen", "finetune", "scratch"]
N = 60
NO_LESIONS = f"{NOTHING_TO_SCORE} (the dataset has no lesion masks)"
SKIPPED_FIGURES = {"saliency_distributions.png", "saliency_overlay.png", "segmentation_overlay.png"}


def _params(methods: list[str], seeds: list[int]) -> Params:
    return validate_params(
        {
            "methods": {m: {"objective": "cross_entropy"} for m in methods},
            "pipeline": {"methods": methods, "seeds": seeds},
            "report": {"reference": methods[0], "bootstrap": 200},
            "segment": {"reference": methods[0]},
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


def _write_skipped_saliency(root: Path, method: str, seed: int, reason: str | None) -> None:
    """What ``sibnet saliency`` writes when nothing can be scored (``reason``: its summary's)."""
    empty = pd.DataFrame(columns=list(SALIENCY_COLUMNS)).astype(SALIENCY_COLUMNS)
    empty.to_parquet(_path(root, "saliency", "saliency", method, seed), index=False)
    write_json(
        _path(root, "saliency", "summary", method, seed),
        {"skipped": reason, "n_maps": 0, "metrics": {}, "method": method, "seed": seed},
    )
    nothing = np.zeros((0, 16, 16))
    write_npz(
        _path(root, "saliency", "examples", method, seed),
        {
            "image": nothing.astype(np.float32),
            "mask": nothing.astype(bool),
            "saliency": nothing.astype(np.float32),
            "hull": nothing.astype(bool),
            "id": np.array([], dtype=str),
            "class": np.array([], dtype=str),
        },
    )


def _write_skipped_segmentation(root: Path, method: str, seed: int) -> None:
    """What ``sibnet segment`` writes with ``segment.structures: []``."""
    empty = pd.DataFrame(columns=list(SEGMENTATION_COLUMNS)).astype(SEGMENTATION_DTYPES)
    empty.to_parquet(_path(root, "segment", "segmentation", method, seed), index=False)
    write_json(
        _path(root, "segment", "summary", method, seed),
        {"skipped": SKIPPED_NO_STRUCTURES, "modes": {}, "method": method, "seed": seed},
    )
    masks = np.zeros((0, 0, 16, 16), dtype=bool)
    write_npz(
        _path(root, "segment", "examples", method, seed),
        {
            "image": np.zeros((0, 16, 16), dtype=np.float32),
            "truth": masks,
            **{f"pred_{mode}": masks for mode in MODES},
            "id": np.array([], dtype=str),
            "structures": np.array([], dtype=str),
        },
    )


def _write_run(
    root: Path,
    method: str,
    seed: int,
    skill: float,
    *,
    skip_saliency: bool = False,
    skip_segmentation: bool = False,
) -> None:
    """One run's outputs: better ``skill`` separates the classes more, noise blurs them.

    ``skip_saliency`` / ``skip_segmentation``: write what those stages write when they have
    nothing to do (no lesion masks to score / ``segment.structures: []``) instead.
    """
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
    added = np.array(SIGMAS) * 0.9  # clipping shrinks what is added
    pd.DataFrame(
        {
            "sigma": SIGMAS,
            "noise_mean_measured": added / 10,
            "noise_std_measured": added,
            "total_noise_std": np.hypot(0.04, added),
        }
    ).to_parquet(_path(root, "robustness", "robustness", method, seed))
    findings = [(i, CLASSES[i % 3]) for i in range(N) if i % 3]
    dice = np.clip(skill / 4 + rng.normal(0, 0.05, len(findings)), 0, 1)
    hd95 = rng.uniform(1, 20, len(findings))
    hd95[::7] = np.nan
    gradcam = pd.DataFrame(
        {
            "method": method,
            "seed": seed,
            "id": [ids[i] for i, _ in findings],
            "class": [c for _, c in findings],
            "map": "gradcam",
            "correct": rng.random(len(findings)) < 0.7,
            "dice": dice,
            "hd95": hd95,
            "ssim": dice / 2,
            "dice_raw": dice,
            "pointing_hit": (dice > 0.3).astype(float),
            "energy_lesion": dice / 3,
            "energy_body": 0.9,
            "negligible": False,
            "empty_binarisation": False,
        }
    )
    # The reference maps: the same for every run (they depend on the data only).
    fixed = np.random.default_rng(99).random(len(findings))
    prior = gradcam.assign(
        map="prior",
        dice=fixed,
        hd95=5 + fixed,
        ssim=fixed / 2,
        dice_raw=fixed,
        pointing_hit=(fixed > 0.5).astype(float),
        energy_lesion=fixed / 2,
        energy_body=0.95,
    )
    uniform = gradcam.assign(
        map="uniform",
        dice=0.0,
        hd95=np.nan,
        ssim=0.99,
        dice_raw=0.0,
        pointing_hit=0.1,
        energy_lesion=0.1,
        energy_body=0.7,
    )
    saliency_rows = pd.concat([gradcam, prior, uniform], ignore_index=True)
    if skip_saliency:
        _write_skipped_saliency(root, method, seed, NO_LESIONS)
    else:
        saliency_rows.to_parquet(_path(root, "saliency", "saliency", method, seed))
    masks = np.zeros((2, 16, 16), dtype=bool)
    masks[:, 4:9, 4:9] = True
    shown = {
        "image": rng.random((2, 16, 16), dtype=np.float32),
        "mask": masks,
        "saliency": rng.random((2, 16, 16), dtype=np.float32),
        "hull": masks,
        "id": ids[[1, 2]],
        "class": np.array(["nodule", "effusion"]),
    }
    if not skip_saliency:
        write_npz(_path(root, "saliency", "examples", method, seed), shown)
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
    if skip_segmentation:
        _write_skipped_segmentation(root, method, seed)
        return
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


def _unreported_copy(root: Path, tmp_path: Path) -> Path:
    """A copy of the run tree ``root`` under ``tmp_path`` without its report folder."""
    copy = tmp_path / "copy"
    shutil.copytree(root, copy)
    shutil.rmtree(copy / "results/report")
    return copy


def _report(params: Params, root: Path) -> dict:
    return report(
        params,
        results=root / "results/phantom",
        models=root / "models/phantom",
        prepared=root / "data/prepared/phantom",
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
    # The first section (validation AUC) reads the training histories.
    with pytest.raises(ReportError, match=r"plain/seed5/history\.csv: missing.*sibnet train"):
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
    assert better["image_delta_ci_low"] > 0  # skill 3 vs 1 on 60 images: clearly better
    # Two seeds: the seed-level interval (t with about 1 df) is far wider than the image one.
    width = better["delta_ci_high"] - better["delta_ci_low"]
    assert width > 2 * (better["image_delta_ci_high"] - better["image_delta_ci_low"])
    assert better["verdict"] in ("higher", "no clear difference")
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
    rows = rows[rows["map"] == "gradcam"]
    per_seed = rows.groupby("seed")["dice"].mean()
    assert metrics["saliency"]["better"]["dice"]["mean"] == pytest.approx(per_seed.mean(), 1e-6)
    hd95 = rows.groupby("seed")["hd95"].mean()  # each run over its defined maps
    assert metrics["saliency"]["better"]["hd95"]["mean"] == pytest.approx(hd95.mean(), 1e-6)
    assert metrics["saliency"]["better"]["dice"]["delta_ci_low"] > 0
    # Per class, with verdicts, and the reference maps beside the methods.
    nodule = metrics["saliency_per_class"]["nodule"]
    assert nodule["better"]["dice"]["verdict"] == "higher"
    assert nodule["better"]["ssim"]["verdict"] is None  # never a verdict on SSIM
    prior = rows[rows["class"] == "nodule"]  # the prior map's direct mean, from any run
    first = pd.read_parquet(_path(root, "saliency", "saliency", "plain", 0))
    direct = first[(first["map"] == "prior") & (first["class"] == "nodule")]["dice"].mean()
    assert nodule["prior map"]["dice"]["mean"] == pytest.approx(direct, abs=1e-6)
    assert nodule["uniform map"]["ssim"]["mean"] == pytest.approx(0.99)
    assert nodule["prior map"]["dice"]["verdict"] is None
    assert len(prior) > 0


def test_report_folder_summary_and_plot_data(reported) -> None:
    _, root, _ = reported
    folder = root / "results/report"
    # the two conditional sections write nothing here (no report.pairs, no unlabeled images)
    assert {p.name for p in folder.iterdir()} == set(REPORT_FILES) - CONDITIONAL_FILES
    summary = (folder / "summary.md").read_text()
    assert "Paired comparisons" not in summary and "Training images" not in summary
    assert "2 methods × 2 seed(s) (0, 1)" in summary
    assert "| better | 2 |" in summary and "higher" in summary
    inputs = [line for line in summary.splitlines() if line.startswith("| `")]
    # Per method: 5 files per seed (predictions, noisy predictions, saliency, segmentation,
    # history), plus the saliency and segmentation examples of the first seed.
    # And the first run's robustness table (the noise really added).
    assert "## Inputs" in summary and len(inputs) == 2 * (2 * 5 + 2) + 1
    assert "*total noise std*" in summary and "### All classes pooled" in summary
    assert "| *prior map* |" in summary and "Holm" in summary
    for png in folder.glob("*.png"):
        assert png.read_bytes().startswith(b"\x89PNG")
    noise = pd.read_csv(root / "results/plots/auc_vs_noise.csv")
    assert noise.columns.tolist() == ["sigma", "plain", "better"]
    assert noise["sigma"].tolist() == SIGMAS
    bars = pd.read_csv(root / "results/plots/saliency.csv")
    assert bars["method"].tolist() == ["plain", "better"]


def test_validation_auc_table_is_the_selection_score_of_each_run(reported) -> None:
    _, root, metrics = reported
    table = pd.read_csv(root / "results/report/validation_auc.csv")
    assert table["method"].tolist() == ["plain", "better"]
    assert table["mean"].tolist() == pytest.approx([0.7, 0.7])
    assert table["best_epochs"].tolist() == ["2 2", "2 2"]
    assert metrics["validation_auc"]["plain"]["mean"] == pytest.approx(0.7)
    summary = (root / "results/report/summary.md").read_text()
    assert summary.index("## Validation macro AUC") < summary.index("## Clean test macro AUC")


def test_validation_auc_table_takes_the_kept_epoch_of_each_seed() -> None:
    from sibnet.report.sections.validation import validation_auc_table

    frames = [
        pd.DataFrame({"epoch": [1, 2, 3], "val_auc": [0.5, 0.9, 0.8]}),
        pd.DataFrame({"epoch": [1, 2, 3], "val_auc": [float("nan"), 0.6, 0.7]}),
    ]
    row = validation_auc_table({"m": frames}).iloc[0]
    assert row["mean"] == pytest.approx(0.8) and row["sd"] == pytest.approx(
        np.std([0.9, 0.7], ddof=1)
    )
    assert (row["min"], row["max"], row["best_epochs"]) == (0.7, 0.9, "2 3")


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


def _drop_last_prediction(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.iloc[:-1]


def _shift_prior_dice(rows: pd.DataFrame) -> pd.DataFrame:
    rows.loc[rows["map"] == "prior", "dice"] += 0.1
    return rows


@pytest.mark.parametrize(
    ("stage_name", "output", "edit", "message"),
    [
        ("evaluate", "predictions", _drop_last_prediction, "other test images"),
        ("saliency", "saliency", _shift_prior_dice, "reference-map scores of better/seed1 differ"),
    ],
)
def test_runs_that_disagree_with_the_first_run_are_refused(
    reported, tmp_path: Path, stage_name: str, output: str, edit, message: str
) -> None:
    """Stale outputs: other test images, or reference maps that differ between runs."""
    params, root, _ = reported
    copy = tmp_path / "copy"
    shutil.copytree(root, copy)
    path = _path(copy, stage_name, output, "better", 1)
    edit(pd.read_parquet(path)).to_parquet(path)
    with pytest.raises(ReportError, match=message):
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
        ("prepared", "data/prepared/phantom"),
        ("report", "results/report"),
        ("metrics", "results/metrics.json"),
        ("noise_plot", "results/plots/a.csv"),
        ("saliency_plot", "results/plots/b.csv"),
    ):
        argv += [f"--{option}", str(tmp_path / path)]
    assert main(argv) == 2
    error = capsys.readouterr().err
    assert "plain/seed0/history.csv: missing" in error and "sibnet train" in error
    assert not (tmp_path / "results/report").exists()


def test_metrics_json_says_nothing_was_left_out_when_every_stage_ran(reported) -> None:
    _, _, metrics = reported
    assert metrics["not_run"] == {}
    assert {"saliency", "segmentation"} <= set(metrics)


@pytest.fixture(scope="module", params=["saliency", "segmentation", "both"])
def reported_skipping(
    request: pytest.FixtureRequest, reported, tmp_path_factory: pytest.TempPathFactory
) -> tuple[str, Path, dict]:
    """The synthetic tree of ``reported`` (same seeds: same numbers), with a stage skipped."""
    skipped = request.param
    root = tmp_path_factory.mktemp(f"report-skipping-{skipped}")
    for method, skill in (("plain", 1.0), ("better", 3.0)):
        for seed in (0, 1):
            _write_run(
                root,
                method,
                seed,
                skill,
                skip_saliency=skipped in ("saliency", "both"),
                skip_segmentation=skipped in ("segmentation", "both"),
            )
    return skipped, root, _report(_params(["plain", "better"], [0, 1]), root)


def test_a_skipped_stage_is_named_in_metrics_json_and_left_out(reported, reported_skipping) -> None:
    _, _, full = reported
    skipped, root, metrics = reported_skipping
    expected = {
        "saliency": {"saliency": NO_LESIONS},
        "segmentation": {"segmentation": SKIPPED_NO_STRUCTURES},
        "both": {"saliency": NO_LESIONS, "segmentation": SKIPPED_NO_STRUCTURES},
    }[skipped]
    assert metrics["not_run"] == expected
    assert json.loads((root / "results/metrics.json").read_text()) == metrics
    for entry in ("saliency", "segmentation"):
        # Left out when skipped; otherwise exactly what the full tree gives.
        assert metrics.get(entry) == (None if entry in expected else full[entry])
    assert metrics["clean_auc"] == full["clean_auc"]
    assert metrics["noise_auc"] == full["noise_auc"]


def test_a_skipped_stage_is_a_sentence_in_the_summary_without_figures(
    reported_skipping,
) -> None:
    skipped, root, _ = reported_skipping
    folder = root / "results/report"
    summary = (folder / "summary.md").read_text()
    saliency_skipped = skipped in ("saliency", "both")
    segmentation_skipped = skipped in ("segmentation", "both")
    left_out = set()
    if saliency_skipped:
        left_out |= {"saliency_distributions.png", "saliency_overlay.png"}
    if segmentation_skipped:
        left_out |= {"segmentation_overlay.png"}
    assert {p.name for p in folder.iterdir()} == set(REPORT_FILES) - left_out - CONDITIONAL_FILES
    for name in SKIPPED_FIGURES:
        assert (f"]({name})" in summary) == (name not in left_out), name
    assert "## Saliency agreement with the lesion masks" in summary
    assert ("| map | seeds | maps (empty, negligible) |" in summary) != saliency_skipped
    assert ("### Correctly and wrongly classified images" in summary) != saliency_skipped
    assert (f"Saliency agreement was not scored: {NO_LESIONS}." in summary) == saliency_skipped
    assert "## Segmentation from the classifiers' encoders" in summary
    assert ("| method | mode | seeds |" in summary) != segmentation_skipped
    sentence = "Segmentation was not run: segment.structures is empty."
    assert (sentence in summary) == segmentation_skipped
    # A skipped stage's summary JSON (its reason) is among the listed inputs.
    assert ("plain/seed1/saliency.json" in summary) == saliency_skipped
    assert ("plain/seed1/segmentation.json" in summary) == segmentation_skipped


def test_a_skipped_stage_still_writes_its_tables_with_the_header_only(
    reported, reported_skipping
) -> None:
    _, full_root, _ = reported
    skipped, root, _ = reported_skipping
    tables = {"saliency": ["saliency.csv"], "segmentation": ["segmentation.csv"]}
    tables["both"] = tables["saliency"] + tables["segmentation"]
    plots = ["results/plots/saliency.csv"] if skipped != "segmentation" else []
    for relative in [f"results/report/{n}" for n in tables[skipped]] + plots:
        table, full = pd.read_csv(root / relative), pd.read_csv(full_root / relative)
        assert table.columns.tolist() == full.columns.tolist() and len(full) > 0, relative
        assert len(table) == 0, relative
    assert pd.read_csv(root / "results/plots/saliency.csv").columns.tolist() == [
        "method",
        "dice",
        "hd95",
        "ssim",
        "dice_raw",
        "pointing_hit",
        "energy_lesion",
        "energy_body",
    ]
    noise = pd.read_csv(root / "results/plots/auc_vs_noise.csv")
    pd.testing.assert_frame_equal(noise, pd.read_csv(full_root / "results/plots/auc_vs_noise.csv"))


@pytest.mark.parametrize("stage_name", ["saliency", "segment"])
def test_runs_that_disagree_on_a_skip_are_refused(reported, tmp_path: Path, stage_name) -> None:

    params, root, _ = reported
    copy = _unreported_copy(root, tmp_path)
    if stage_name == "saliency":
        _write_skipped_saliency(copy, "better", 1, NO_LESIONS)
    else:
        _write_skipped_segmentation(copy, "better", 1)
    with pytest.raises(
        ReportError,
        match=rf"sibnet {stage_name}` wrote no rows for better/seed1 but did for plain/seed0, ",
    ):
        _report(params, copy)
    assert not (copy / "results/report").exists()


def test_empty_rows_without_a_skip_reason_are_refused(tmp_path: Path) -> None:
    for method, skill in (("plain", 1.0), ("better", 3.0)):
        _write_run(tmp_path, method, 0, skill, skip_saliency=True)
        _write_skipped_saliency(tmp_path, method, 0, None)  # rows empty, but no reason given
    with pytest.raises(ReportError, match=r"plain/seed0/saliency\.json: .*no 'skipped' reason"):
        _report(_params(["plain", "better"], [0]), tmp_path)


def test_comparison_of_no_rows_is_an_empty_table() -> None:
    rows = pd.DataFrame(columns=["method", "seed", "id", "class", "dice"])
    table = compare(
        rows,
        ["dice"],
        keys=("id", "class"),
        reference="plain",
        boot={"resamples": 10, "confidence": 0.95, "seed": 0},
        mode="frozen",
    )
    assert table.empty and table.columns.tolist() == [*COMPARISON_COLUMNS, "mode", "score"]


TOY_SECTION = '''
"""A report section outside the package, registering itself on import."""

import pandas as pd

from sibnet.report.section import ReportFile, Section, SectionOutput
from sibnet.report.sections import SECTIONS


def build(context):
    """Each method's number of seeds, from the clean test predictions."""
    test = context.test_predictions()
    runs = [len(p) for p in test.probs.values()]
    table = pd.DataFrame({"method": list(test.probs), "runs": runs})
    return SectionOutput(
        markdown="## Toy section\\n\\nSeeds per method: " + ", ".join(map(str, table["runs"])),
        tables={"toy.csv": table},
        metrics={"toy": {"methods": len(table)}},
    )


SECTION = SECTIONS.add(
    Section(
        name="toy",
        subcategory="Toy",
        files=(ReportFile("toy.csv", "Toy table", "**Toy** ``{reference}``."),),
        build=build,
        metrics_caption="``toy``",
    )
)
'''


@pytest.fixture
def toy_section(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """The toy section of :data:`TOY_SECTION`, imported from a module in ``tmp_path``; the
    registry, ``sys.path`` and ``sys.modules`` are restored afterwards."""
    import importlib
    import sys

    folder = tmp_path / "toy_module"
    folder.mkdir()
    (folder / "sibnet_toy_section.py").write_text(TOY_SECTION, encoding="utf-8")
    monkeypatch.syspath_prepend(str(folder))
    with SECTIONS.restored():
        try:
            yield importlib.import_module("sibnet_toy_section").SECTION
        finally:
            sys.modules.pop("sibnet_toy_section", None)


def test_a_registered_section_is_in_the_report(reported, toy_section, tmp_path: Path) -> None:
    params, root, full = reported
    copy = _unreported_copy(root, tmp_path)
    metrics = _report(params, copy)
    summary = (copy / "results/report/summary.md").read_text()
    assert "## Toy section\n\nSeeds per method: 2, 2\n\n## Figures" in summary
    toy = pd.read_csv(copy / "results/report/toy.csv")
    assert toy.to_dict("list") == {"method": ["plain", "better"], "runs": [2, 2]}
    assert metrics["toy"] == {"methods": 2}
    assert {k: v for k, v in metrics.items() if k != "toy"} == full
    from sibnet.report.summary import snakemake_results

    results = snakemake_results(params, SECTIONS)
    assert results["toy"] == {
        "subcategory": "Toy",
        "title": "Toy table",
        "caption": "**Toy** ``plain``.",
    }
    assert "``toy``" in results["metrics.json"]["caption"]


def test_the_toy_section_is_gone_after_its_test() -> None:
    assert SECTIONS.names() == [
        "training_images",
        "validation",
        "clean_auc",
        "pairs",
        "noise",
        "saliency",
        "training",
        "segmentation",
    ]


def test_a_section_module_left_unregistered_fails_naming_the_registry(
    reported, tmp_path: Path
) -> None:
    message = (
        r"sibnet\.report\.sections\.training registers no section in "
        r"sibnet\.report\.sections\.SECTIONS"
    )
    params, root, _ = reported
    copy = _unreported_copy(root, tmp_path)
    with SECTIONS.restored():
        SECTIONS.unregister("training")
        with pytest.raises(ReportError, match=message):
            SECTIONS.check()
        with pytest.raises(ReportError, match=message):
            _report(params, copy)
    assert not (copy / "results/report").exists()


def test_a_section_cannot_take_a_registered_name_or_file() -> None:
    def build(context):
        return SectionOutput()

    for section in (
        Section("noise", "Other", (), build),
        Section("other", "Other", (ReportFile("clean_auc.png", "New", ""),), build),
    ):
        with pytest.raises(ReportError, match=r"sibnet\.report\.sections\.SECTIONS: "):
            SECTIONS.add(section)
    assert len(SECTIONS) == 8


def test_a_section_writing_an_undeclared_file_is_refused() -> None:
    def build(context):
        return SectionOutput(tables={"extra.csv": pd.DataFrame()})

    section = Section("toy", "Toy", (ReportFile("toy.csv", "Toy", ""),), build)
    with pytest.raises(ReportError, match=r"'toy' .* writes 'extra\.csv'.*\['toy\.csv'\]"):
        section.check_output(build(None))


def test_segmentation_and_report_references_may_differ(reported, tmp_path: Path) -> None:
    """``segment.reference`` trains the extra modes; ``report.reference`` is the comparison
    method. A mode the report's reference was not trained in is compared with the segmentation
    reference, the only method in it."""
    _, root, _ = reported
    copy = _unreported_copy(root, tmp_path)
    for seed in (0, 1):  # "better" trained only the frozen decoder
        path = _path(copy, "segment", "segmentation", "better", seed)
        rows = pd.read_parquet(path)
        rows[rows["mode"] == "frozen"].to_parquet(path)
    raw = _params(["plain", "better"], [0, 1]).model_dump(mode="json")
    raw["report"]["reference"] = "better"
    raw["segment"]["reference"] = "plain"
    _report(validate_params(raw), copy)
    table = pd.read_csv(copy / "results/report/segmentation.csv")
    dice = table[table["score"] == "dice"].set_index(["mode", "method"])
    assert set(dice.index) == {
        ("frozen", "plain"),
        ("frozen", "better"),
        ("finetune", "plain"),
        ("scratch", "plain"),
    }
    assert np.isfinite(dice.loc[("frozen", "plain"), "delta"])  # against better
    summary = (copy / "results/report/summary.md").read_text()
    assert "Δ of finetune, scratch against `plain`, the only method trained in it." in summary
    assert "| plain | finetune | 2 |" in summary and "| plain | frozen | 2 |" in summary


def test_report_pairs_compare_two_methods_like_the_reference_table(
    reported, tmp_path: Path
) -> None:
    _, root, _ = reported
    copy = _unreported_copy(root, tmp_path)
    raw = _params(["plain", "better"], [0, 1]).model_dump(mode="json")
    raw["report"]["pairs"] = [["better", "plain"], ["plain", "better"]]
    metrics = _report(validate_params(raw), copy)
    pairs = pd.read_csv(copy / "results/report/pairs.csv")
    clean = pd.read_csv(copy / "results/report/clean_auc.csv").set_index("method")
    assert pairs[["method", "against"]].values.tolist() == [
        ["better", "plain"],
        ["plain", "better"],
    ]
    # the same comparison as the clean table's against its reference, plain
    for key in ("delta", "delta_ci_low", "delta_ci_high", "p_value"):
        assert pairs.loc[0, key] == pytest.approx(clean.loc["better", key], abs=1e-6)
    assert pairs.loc[1, "delta"] == pytest.approx(-pairs.loc[0, "delta"], abs=1e-6)
    assert pairs.loc[0, "against_mean"] == pytest.approx(clean.loc["plain", "mean"], abs=1e-6)
    # Holm over the two pairs (equal p-values: each doubled)
    assert list(pairs["p_holm"]) == pytest.approx(
        [min(1.0, 2 * pairs.loc[0, "p_value"])] * 2, abs=1e-5
    )
    assert [e["against"] for e in metrics["pairs"]] == ["plain", "better"]
    summary = (copy / "results/report/summary.md").read_text()
    assert "## Paired comparisons (clean test macro AUC)" in summary
    assert "| better | plain |" in summary


def test_report_pairs_are_checked_against_the_pipeline() -> None:
    raw = _params(["plain", "better"], [0, 1]).model_dump(mode="json")
    for pairs, message in (
        ([["better", "other"]], "report.pairs names \\['other'\\]"),
        ([["better", "better"]], "two different methods"),
        ([["better", "plain"], ["better", "plain"]], "must not repeat"),
        ([["better"]], "at least 2"),
    ):
        raw["report"]["pairs"] = pairs
        with pytest.raises(ParamsError, match=message):
            validate_params(raw)


def test_training_images_table_where_the_dataset_has_unlabeled_images(
    reported, tmp_path: Path
) -> None:
    _, root, _ = reported
    copy = _unreported_copy(root, tmp_path)
    write_json(
        copy / "data/prepared/phantom/dataset.json",
        {
            "split_counts": {"train": 130, "val": 20, "test": 30},
            "unlabeled": {"images": 30, "withheld_labels": 30, "origin": "test fixture"},
        },
    )
    raw = _params(["plain", "better"], [0, 1]).model_dump(mode="json")
    raw["prepare"]["phantom"]["unlabeled_images"] = 30
    raw["methods"]["better"]["unlabeled"] = "oracle"
    metrics = _report(validate_params(raw), copy)
    table = pd.read_csv(copy / "results/report/training_images.csv").set_index("method")
    assert table.loc[
        "plain", ["training_images", "labeled_images", "unlabeled_images"]
    ].tolist() == [100, 100, 0]
    assert table.loc["better", ["training_images", "labeled_images"]].tolist() == [130, 130]
    assert table.loc["better", "unlabeled"] == "oracle"
    assert metrics["training_images"] == {
        "train_labeled": 100,
        "train_unlabeled": 30,
        "withheld_labels": 30,
        "val": 20,
        "test": 30,
        "origin": "test fixture",
    }
    summary = (copy / "results/report/summary.md").read_text()
    assert "100 labeled and 30 unlabeled (test fixture; 30 with withheld labels)" in summary
    assert "data/prepared/phantom/dataset.json" in summary  # an input, with its hash
