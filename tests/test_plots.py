"""sibnet.plots: valid PNGs, deterministic bytes, degenerate inputs, atomic writes."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import matplotlib.image
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest

from sibnet.plots.report import (
    plot_auc_vs_noise,
    plot_saliency_distributions,
    plot_saliency_overlay,
    plot_training_summary,
)

# A warning (a contour of a constant array, a legend without handles, ...) is a failure here.
pytestmark = pytest.mark.filterwarnings("error")

SIGMAS = (0.0, 0.005, 0.01, 0.05, 0.1)


def _assert_png(path: Path) -> np.ndarray:
    """``path`` is a PNG alone in its folder (no temporary file left); its ``(H, W, 4)`` pixels."""
    assert path.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    assert [entry.name for entry in path.parent.iterdir()] == [path.name]
    pixels = matplotlib.image.imread(path)
    assert pixels.ndim == 3 and pixels.shape[2] in (3, 4)
    assert pixels.shape[0] > 50 and pixels.shape[1] > 50
    assert plt.get_fignums() == []
    return pixels


def _assert_deterministic(tmp_path: Path, draw: Callable[[Path], None]) -> None:
    """``draw`` writes a valid PNG, the same bytes twice, each into a folder of its own."""
    first, second = tmp_path / "a" / "figure.png", tmp_path / "b" / "figure.png"
    draw(first)
    draw(second)
    _assert_png(first)
    _assert_png(second)
    assert first.read_bytes() == second.read_bytes()


def _summary(methods: tuple[str, ...] = ("baseline", "sibnet")) -> pd.DataFrame:
    rows = []
    for index, method in enumerate(methods):
        for sigma in SIGMAS:
            auc = 0.9 + 0.01 * index - sigma
            rows.append(
                {
                    "method": method,
                    "sigma": sigma,
                    "macro_auc": auc,
                    "ci_low": auc - 0.02,
                    "ci_high": auc + 0.02,
                }
            )
    return pd.DataFrame(rows)


def _scores(rng: np.random.Generator, per_method: int = 40) -> pd.DataFrame:
    methods = ("gradcam", "sibnet", "empty")
    frame = pd.DataFrame(
        {
            "method": np.repeat(methods, per_method),
            "dice": rng.uniform(0, 1, 3 * per_method),
            "hd95": rng.gamma(2.0, 4.0, 3 * per_method),
            "ssim": rng.uniform(0, 1, 3 * per_method),
        }
    )
    frame.loc[frame.index[:5], "hd95"] = np.nan
    frame.loc[frame["method"] == "empty", "hd95"] = np.nan
    return frame


def _overlay_inputs(
    count: int = 3, methods: tuple[str, ...] = ("gradcam", "sibnet"), size: int = 24
) -> dict:
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:size, :size]
    images = rng.uniform(0, 1, (count, size, size))
    masks = np.zeros((count, size, size), dtype=bool)
    masks[0, 5:12, 6:14] = True
    if count > 2:
        masks[2] = True  # a full mask: its outline is the image border
    maps, hulls = {}, {}
    for index, method in enumerate(methods):
        blob = np.exp(-((xx - 10 - 2 * index) ** 2 + (yy - 10) ** 2) / 20.0)
        maps[method] = np.repeat(blob[None], count, axis=0)
        hulls[method] = maps[method] > 0.5
        if count > 1:
            hulls[method][1] = False  # an empty hull: no outline
    captions = [f"img-{index:04d} · nodule" for index in range(count)]
    return {"images": images, "masks": masks, "maps": maps, "hulls": hulls, "captions": captions}


def _history(rng: np.random.Generator, epochs: int = 5) -> pd.DataFrame:
    epoch = np.arange(1, epochs + 1)
    return pd.DataFrame(
        {
            "epoch": epoch,
            "train_loss": np.exp(-epoch / 3) + rng.uniform(0, 0.05, epochs),
            "val_loss": np.exp(-epoch / 4),
            "val_auc": 0.5 + 0.3 * (1 - np.exp(-epoch / 2)),
            "learning_rate": 1e-3,
        }
    )


# --- plot_auc_vs_noise ---------------------------------------------------------------------------


def test_auc_vs_noise_writes_deterministic_png(tmp_path: Path) -> None:
    summary = _summary()
    _assert_deterministic(tmp_path, lambda path: plot_auc_vs_noise(summary, path, "AUC vs noise"))


def test_auc_vs_noise_nan_intervals_and_one_method(tmp_path: Path) -> None:
    summary = _summary(("baseline",))
    summary.loc[1::2, ["ci_low", "ci_high"]] = np.nan
    summary = summary.iloc[::-1]  # unsorted σ
    plot_auc_vs_noise(summary, tmp_path / "auc.png", "no intervals")
    _assert_png(tmp_path / "auc.png")

    only = _summary().assign(ci_low=np.nan, ci_high=np.nan).iloc[:1]
    plot_auc_vs_noise(only, tmp_path / "one" / "auc.png", "one point")
    _assert_png(tmp_path / "one" / "auc.png")


def test_auc_vs_noise_rejects_missing_column(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="ci_high"):
        plot_auc_vs_noise(_summary().drop(columns="ci_high"), tmp_path / "auc.png", "t")
    assert list(tmp_path.iterdir()) == []


# --- plot_saliency_distributions -----------------------------------------------------------------


def test_saliency_distributions_writes_deterministic_png(tmp_path: Path) -> None:
    rows = _scores(np.random.default_rng(0))
    _assert_deterministic(
        tmp_path, lambda path: plot_saliency_distributions(rows, path, "saliency scores")
    )


def test_saliency_distributions_all_nan_metric_and_custom_metrics(tmp_path: Path) -> None:
    rows = _scores(np.random.default_rng(1))
    rows["hd95"] = np.nan  # no finite value for any method
    rows["iou"] = rows["dice"] / (2 - rows["dice"])
    plot_saliency_distributions(rows, tmp_path / "scores.png", "t", metrics=("hd95", "iou"))
    _assert_png(tmp_path / "scores.png")


def test_saliency_distributions_many_points_single_method(tmp_path: Path) -> None:
    rows = _scores(np.random.default_rng(2), per_method=2500)  # above the jitter limit
    rows = rows[rows["method"] == "gradcam"]
    plot_saliency_distributions(rows, tmp_path / "scores.png", "t", metrics=("dice",))
    _assert_png(tmp_path / "scores.png")


def test_saliency_distributions_rejects_missing_metric(tmp_path: Path) -> None:
    rows = _scores(np.random.default_rng(0))
    with pytest.raises(ValueError, match="pointing_game"):
        plot_saliency_distributions(rows, tmp_path / "s.png", "t", metrics=("pointing_game",))
    with pytest.raises(ValueError, match="metrics"):
        plot_saliency_distributions(rows, tmp_path / "s.png", "t", metrics=())
    assert list(tmp_path.iterdir()) == []


# --- plot_saliency_overlay -----------------------------------------------------------------------


def test_saliency_overlay_writes_deterministic_png(tmp_path: Path) -> None:
    inputs = _overlay_inputs()
    _assert_deterministic(
        tmp_path, lambda path: plot_saliency_overlay(**inputs, path=path, title="overlays")
    )


def test_saliency_overlay_grid_grows_with_methods_and_images(tmp_path: Path) -> None:
    small, large = tmp_path / "small" / "o.png", tmp_path / "large" / "o.png"
    plot_saliency_overlay(**_overlay_inputs(count=1, methods=("gradcam",)), path=small, title="t")
    plot_saliency_overlay(
        **_overlay_inputs(count=4, methods=("a", "b", "c")), path=large, title="t"
    )
    small_pixels, large_pixels = _assert_png(small), _assert_png(large)
    assert large_pixels.shape[0] > small_pixels.shape[0]
    assert large_pixels.shape[1] > small_pixels.shape[1]


def test_saliency_overlay_empty_masks_and_hulls(tmp_path: Path) -> None:
    inputs = _overlay_inputs(count=2)
    inputs["masks"][:] = False
    for hull in inputs["hulls"].values():
        hull[:] = False
    plot_saliency_overlay(**inputs, path=tmp_path / "o.png", title="nothing to outline")
    _assert_png(tmp_path / "o.png")


@pytest.mark.parametrize(
    ("argument", "change"),
    [
        ("images", lambda inputs: inputs.update(images=inputs["images"][0])),
        ("masks", lambda inputs: inputs.update(masks=inputs["masks"][:, :-1])),
        ("maps['sibnet']", lambda inputs: inputs["maps"].update(sibnet=np.zeros((3, 24, 23)))),
        ("hulls['gradcam']", lambda inputs: inputs["hulls"].update(gradcam=np.zeros((2, 24, 24)))),
        ("hulls", lambda inputs: inputs["hulls"].pop("sibnet")),
        ("maps", lambda inputs: inputs.update(maps={})),
        ("captions", lambda inputs: inputs.update(captions=inputs["captions"][:2])),
    ],
)
def test_saliency_overlay_rejects_mismatch(
    tmp_path: Path, argument: str, change: Callable[[dict], object]
) -> None:
    inputs = _overlay_inputs(count=3)
    change(inputs)
    with pytest.raises(ValueError) as raised:
        plot_saliency_overlay(**inputs, path=tmp_path / "o.png", title="t")
    assert str(raised.value).startswith(argument)
    assert list(tmp_path.iterdir()) == []
    assert plt.get_fignums() == []


# --- plot_training_summary -----------------------------------------------------------------------


def test_training_summary_writes_deterministic_png(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    histories = {method: [_history(rng) for _ in range(3)] for method in ("baseline", "sibnet")}
    _assert_deterministic(
        tmp_path, lambda path: plot_training_summary(histories, path, "training summary")
    )


def test_training_summary_one_method_one_epoch(tmp_path: Path) -> None:
    histories = {"baseline": [_history(np.random.default_rng(0), epochs=1)]}
    plot_training_summary(histories, tmp_path / "t.png", "one epoch")
    _assert_png(tmp_path / "t.png")


def test_training_summary_rejects_missing_column(tmp_path: Path) -> None:
    frame = _history(np.random.default_rng(0)).drop(columns="val_auc")
    with pytest.raises(ValueError, match="val_auc"):
        plot_training_summary({"baseline": [frame]}, tmp_path / "t.png", "t")
    with pytest.raises(ValueError, match="histories"):
        plot_training_summary({}, tmp_path / "t.png", "t")
    assert list(tmp_path.iterdir()) == []


def test_segmentation_overlay_writes_a_png_and_checks_shapes(tmp_path: Path) -> None:
    from sibnet.plots.report import plot_segmentation_overlay

    rng = np.random.default_rng(0)
    images = rng.random((2, 16, 16))
    truth = np.zeros((2, 2, 16, 16), dtype=bool)
    truth[:, 0, 2:8, 2:7] = truth[:, 1, 2:8, 9:14] = True
    empty = np.zeros_like(truth)  # an empty prediction draws no outline
    path = tmp_path / "segmentation.png"
    plot_segmentation_overlay(
        images, truth, {"a · frozen": truth, "b · scratch": empty}, ["x", "y"], path, "t"
    )
    assert path.read_bytes().startswith(b"\x89PNG")
    with pytest.raises(ValueError, match=r"predictions\['a'\] has shape"):
        plot_segmentation_overlay(images, truth, {"a": truth[:1]}, ["x", "y"], path, "t")
    with pytest.raises(ValueError, match="captions has 1 entries"):
        plot_segmentation_overlay(images, truth, {"a": truth}, ["x"], path, "t")
