"""The report's figures: AUC against input noise, saliency-score distributions, saliency and
segmentation overlays, multi-seed training summaries."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from sibnet.plots.common import save_figure

__all__ = [
    "plot_auc_vs_noise",
    "plot_saliency_distributions",
    "plot_saliency_overlay",
    "plot_segmentation_overlay",
    "plot_training_summary",
]


def _require_columns(frame: pd.DataFrame, columns: Sequence[str], name: str) -> None:
    missing = [column for column in columns if column not in frame.columns]
    if missing:
        raise ValueError(f"{name} lacks the column(s) {missing}")


def _methods_in_order(frame: pd.DataFrame) -> list[str]:
    """The distinct values of ``frame["method"]`` in order of first appearance."""
    return [str(method) for method in pd.unique(frame["method"].astype(str))]


def plot_auc_vs_noise(summary: pd.DataFrame, path: str | Path, title: str) -> None:
    """Test macro AUC against the σ of the Gaussian noise added to test images, one line per method.

    Args:
        summary: one row per (method, sigma); columns ``method`` (str), ``sigma`` (float),
            ``macro_auc`` (float) and ``ci_low``, ``ci_high`` (float, NaN where there is no
            interval). Methods are drawn in order of first appearance.
        path: the PNG to write.
        title: the figure title.

    The σ values are unevenly spaced, so they sit at evenly spaced x positions labelled with their
    values. Confidence intervals are drawn as capped vertical bars where both ends are finite; the
    methods are dodged slightly sideways so that their bars do not overlap.

    Raises:
        ValueError: ``summary`` is empty or lacks a column.
    """
    _require_columns(summary, ("method", "sigma", "macro_auc", "ci_low", "ci_high"), "summary")
    if summary.empty:
        raise ValueError("summary has no rows")
    frame = summary.assign(method=summary["method"].astype(str))
    sigmas = np.unique(frame["sigma"].to_numpy(dtype=float))
    sigmas = sigmas[np.isfinite(sigmas)]
    position = {float(sigma): index for index, sigma in enumerate(sigmas)}
    methods = _methods_in_order(frame)
    dodge = 0.05 if len(methods) > 1 else 0.0

    figure, axis = plt.subplots(figsize=(max(5.0, 1.0 + 0.9 * len(sigmas)), 4.0))
    for index, method in enumerate(methods):
        rows = frame[frame["method"] == method]
        sigma = rows["sigma"].to_numpy(dtype=float)
        keep = np.isfinite(sigma)
        rows, sigma = rows[keep], sigma[keep]
        order = np.argsort(sigma, kind="stable")
        offset = dodge * (index - (len(methods) - 1) / 2)
        x = np.array([position[float(value)] for value in sigma[order]], dtype=float) + offset
        auc = rows["macro_auc"].to_numpy(dtype=float)[order]
        low = rows["ci_low"].to_numpy(dtype=float)[order]
        high = rows["ci_high"].to_numpy(dtype=float)[order]
        colour = f"C{index % 10}"
        axis.plot(x, auc, marker="o", color=colour, label=method)
        finite = np.isfinite(low) & np.isfinite(high)
        if finite.any():
            axis.vlines(x[finite], low[finite], high[finite], color=colour, linewidth=1, alpha=0.7)
            for end in (low[finite], high[finite]):
                axis.plot(x[finite], end, linestyle="none", marker="_", color=colour, alpha=0.7)
    axis.set_xticks(np.arange(len(sigmas)), [f"{sigma:g}" for sigma in sigmas])
    axis.set_xlim(-0.5, max(len(sigmas) - 0.5, 0.5))
    axis.set(xlabel="Gaussian noise σ (intensity in [0, 1])", ylabel="test macro AUC", title=title)
    axis.grid(axis="y", alpha=0.3)
    axis.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0)
    save_figure(figure, path)


_METRIC_LABELS = {"dice": "Dice", "hd95": "HD95 (pixels)", "ssim": "SSIM"}


_MAX_JITTERED_POINTS = 2000


def plot_saliency_distributions(
    rows: pd.DataFrame,
    path: str | Path,
    title: str,
    metrics: Sequence[str] = ("dice", "hd95", "ssim"),
) -> None:
    """Box plots of saliency scores, one panel per metric and one box per method.

    Args:
        rows: one row per scored saliency map; a ``method`` column and one float column per
            metric (NaN allowed, e.g. HD95 when one mask is empty). Methods are drawn in order of
            first appearance.
        path: the PNG to write.
        title: the figure title.
        metrics: the metric columns to draw, one panel each.

    Each box summarises the finite values of its method; when a method has at most 2000 of them
    they are also drawn as lightly jittered points (seeded, so the bytes are reproducible). The
    number of non-finite values, if any, is written under the box as ``n/a: k``. A method without
    finite values leaves an empty slot.

    Raises:
        ValueError: ``rows`` is empty, ``metrics`` is empty or a column is missing.
    """
    metrics = list(metrics)
    if not metrics:
        raise ValueError("metrics is empty")
    _require_columns(rows, ("method", *metrics), "rows")
    if rows.empty:
        raise ValueError("rows has no rows")
    methods = _methods_in_order(rows)
    names = rows["method"].astype(str).to_numpy()
    width = max(3.2, 1.2 + 0.75 * len(methods))
    figure, axes = plt.subplots(
        1, len(metrics), figsize=(width * len(metrics), 4.0), squeeze=False, layout="constrained"
    )
    for axis, metric in zip(axes[0], metrics, strict=True):
        rng = np.random.default_rng(0)
        values = pd.to_numeric(rows[metric], errors="coerce").to_numpy(dtype=float)
        positions, data, labels = [], [], []
        for slot, method in enumerate(methods, start=1):
            scores = values[names == method]
            finite = scores[np.isfinite(scores)]
            missing = len(scores) - len(finite)
            labels.append(f"{method}\nn/a: {missing}" if missing else method)
            if len(finite) == 0:
                continue
            positions.append(slot)
            data.append(finite)
            if len(finite) <= _MAX_JITTERED_POINTS:
                jitter = rng.uniform(-0.12, 0.12, size=len(finite))
                axis.scatter(
                    slot + jitter, finite, s=6, color="k", alpha=0.35, linewidths=0, zorder=3
                )
        if data:
            axis.boxplot(
                data,
                positions=positions,
                widths=0.5,
                showfliers=not all(len(d) <= _MAX_JITTERED_POINTS for d in data),
                medianprops={"color": "tab:orange", "linewidth": 1.5},
            )
        rotate = len(methods) > 3
        axis.set_xticks(
            np.arange(1, len(methods) + 1),
            labels,
            rotation=30 if rotate else 0,
            ha="right" if rotate else "center",
            fontsize="small",
        )
        axis.set_xlim(0.5, len(methods) + 0.5)
        axis.set_ylabel(_METRIC_LABELS.get(metric, metric))
        axis.grid(axis="y", alpha=0.3)
    figure.suptitle(title)
    save_figure(figure, path)


def _draw_contour(axis: Axes, mask: np.ndarray, **style: object) -> None:
    """The outline of ``mask`` ``(H, W)`` on pixel edges; nothing for an empty mask.

    The mask is padded with a False border so that regions touching the image edge (or a full
    mask) get closed outlines instead of a warning about a constant array.
    """
    if not mask.any():
        return
    height, width = mask.shape
    padded = np.pad(mask.astype(float), 1)
    axis.contour(np.arange(-1, width + 1), np.arange(-1, height + 1), padded, levels=[0.5], **style)


def plot_saliency_overlay(
    images: np.ndarray,
    masks: np.ndarray,
    maps: Mapping[str, np.ndarray],
    hulls: Mapping[str, np.ndarray],
    captions: Sequence[str],
    path: str | Path,
    title: str,
) -> None:
    """Saliency maps of several methods over the same images, with ground-truth and hull outlines.

    Args:
        images: ``(N, H, W)`` grey images, intensity in [0, 1].
        masks: ``(N, H, W)`` bool ground-truth masks.
        maps: method → ``(N, H, W)`` saliency in [0, 1]; one grid row per method, in this order.
        hulls: method → ``(N, H, W)`` bool convex hulls of the binarised maps; a key per method
            of ``maps`` (extra keys are ignored).
        captions: ``N`` column titles, e.g. ``"img-0012 · nodule"``.
        path: the PNG to write.
        title: the figure title.

    Each cell shows the image in grey, the saliency map over it ("jet", alpha 0.45), the ground
    truth outline (lime, solid) and the hull outline (magenta, dashed); empty masks get no outline.

    Raises:
        ValueError: an argument's shape or length does not match ``images``, naming the argument.
    """
    images = np.asarray(images, dtype=float)
    if images.ndim != 3 or 0 in images.shape:
        raise ValueError(f"images must have shape (N, H, W) with N, H, W > 0, not {images.shape}")
    shape = images.shape
    masks = np.asarray(masks).astype(bool)
    if masks.shape != shape:
        raise ValueError(f"masks has shape {masks.shape}, images {shape}")
    if not maps:
        raise ValueError("maps is empty")
    methods = list(maps)
    heat: dict[str, np.ndarray] = {}
    outline: dict[str, np.ndarray] = {}
    for method in methods:
        heat[method] = np.asarray(maps[method], dtype=float)
        if heat[method].shape != shape:
            raise ValueError(f"maps[{method!r}] has shape {heat[method].shape}, images {shape}")
        if method not in hulls:
            raise ValueError(f"hulls lacks the method {method!r} of maps")
        outline[method] = np.asarray(hulls[method]).astype(bool)
        if outline[method].shape != shape:
            raise ValueError(f"hulls[{method!r}] has shape {outline[method].shape}, images {shape}")
    captions = [str(caption) for caption in captions]
    if len(captions) != shape[0]:
        raise ValueError(f"captions has {len(captions)} entries, images {shape[0]}")

    count, height, width = shape
    cell = 2.2  # inches per image column
    top, bottom = 0.6, 0.1  # inches: title and captions above, a margin below
    grid_height = cell * len(methods) * height / width
    figure_height = grid_height + top + bottom
    figure, axes = plt.subplots(
        len(methods), count, figsize=(cell * count + 0.6, figure_height), squeeze=False
    )
    figure.subplots_adjust(
        left=0.3 / (cell * count + 0.6),
        right=1.0 - 0.3 / (cell * count + 0.6),
        top=1.0 - top / figure_height,
        bottom=bottom / figure_height,
        wspace=0.04,
        hspace=0.04,
    )
    truth_style = {"colors": "lime", "linewidths": 1.2, "linestyles": "solid"}
    hull_style = {"colors": "magenta", "linewidths": 1.2, "linestyles": "dashed"}
    for row, method in enumerate(methods):
        for column in range(count):
            axis = axes[row, column]
            axis.imshow(images[column], cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
            axis.imshow(
                heat[method][column],
                cmap="jet",
                alpha=0.45,
                vmin=0.0,
                vmax=1.0,
                interpolation="nearest",
            )
            _draw_contour(axis, masks[column], **truth_style)
            _draw_contour(axis, outline[method][column], **hull_style)
            axis.set_xlim(-0.5, width - 0.5)
            axis.set_ylim(height - 0.5, -0.5)
            axis.set_xticks([])
            axis.set_yticks([])
            if row == 0:
                axis.set_title(captions[column], fontsize="small")
            if column == 0:
                axis.set_ylabel(method)
    handles = [
        Line2D([], [], color="lime", linewidth=1.2, label="ground truth"),
        Line2D(
            [],
            [],
            color="magenta",
            linewidth=1.2,
            linestyle="--",
            label="hull of the binarised map",
        ),
        Patch(facecolor="none", edgecolor="none", label="saliency: jet, 0 (blue) to 1 (red)"),
    ]
    figure.legend(  # hangs below the grid; the tight bounding box makes room for it
        handles=handles,
        loc="upper center",
        ncols=3 if count >= 3 else 1,
        fontsize="small",
        frameon=False,
        handlelength=1.8,
        bbox_to_anchor=(0.5, (bottom - 0.05) / figure_height),
    )
    figure.suptitle(title)
    save_figure(figure, path)


def plot_training_summary(
    histories: Mapping[str, Sequence[pd.DataFrame]], path: str | Path, title: str
) -> None:
    """Train loss and validation macro AUC against epoch of every seed of every method.

    Args:
        histories: method → the ``history.csv`` frames of its seeds (columns ``epoch``,
            ``train_loss``, ``val_loss``, ``val_auc``; others are ignored). One colour per method,
            one thin line per seed; only the first seed's line of a method carries a legend label.
        path: the PNG to write.
        title: the figure title.

    Raises:
        ValueError: ``histories`` is empty or a frame lacks a column.
    """
    if not histories:
        raise ValueError("histories is empty")
    for method, frames in histories.items():
        for seed, frame in enumerate(frames):
            _require_columns(
                frame,
                ("epoch", "train_loss", "val_loss", "val_auc"),
                f"histories[{method!r}][{seed}]",
            )
    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 3.8), layout="constrained")
    for index, (method, frames) in enumerate(histories.items()):
        colour = f"C{index % 10}"
        for seed, history in enumerate(frames):
            frame = history.sort_values("epoch", kind="stable")
            style = {
                "color": colour,
                "linewidth": 1.0,
                "alpha": 0.8,
                "marker": ".",
                "markersize": 3,
                "label": str(method) if seed == 0 else None,
            }
            left.plot(frame["epoch"], frame["train_loss"], **style)
            right.plot(frame["epoch"], frame["val_auc"], **style)
    left.set(xlabel="epoch", ylabel="train loss", title="training loss")
    right.set(xlabel="epoch", ylabel="macro AUC", title="validation macro AUC")
    for axis in (left, right):
        axis.grid(alpha=0.3)
    handles, labels = right.get_legend_handles_labels()
    if handles:
        figure.legend(handles, labels, loc="outside right upper", fontsize="small")
    figure.suptitle(title)
    save_figure(figure, path)


def plot_segmentation_overlay(
    images: np.ndarray,
    truth: np.ndarray,
    predictions: Mapping[str, np.ndarray],
    captions: Sequence[str],
    path: str | Path,
    title: str,
) -> None:
    """Predicted against ground-truth outlines over the same images, one grid row per model.

    Args:
        images: ``(N, H, W)`` grey images, intensity in [0, 1].
        truth: ``(N, K, H, W)`` bool ground-truth masks of ``K`` structures.
        predictions: row label (e.g. a method) → ``(N, K, H, W)`` bool predicted masks.
        captions: ``N`` column titles.
        path: the PNG to write.
        title: the figure title.

    Ground truth is outlined in lime (solid), predictions in magenta (dashed), every structure.

    Raises:
        ValueError: an argument's shape or length does not match, naming the argument.
    """
    images = np.asarray(images, dtype=float)
    truth = np.asarray(truth).astype(bool)
    if images.ndim != 3 or truth.ndim != 4 or truth.shape[0] != len(images):
        raise ValueError(
            f"images {images.shape} and truth {truth.shape} must be (N, H, W), (N, K, H, W)"
        )
    if truth.shape[2:] != images.shape[1:]:
        raise ValueError(f"truth has shape {truth.shape}, images {images.shape}")
    if not predictions:
        raise ValueError("predictions is empty")
    for label, predicted in predictions.items():
        if np.shape(predicted) != truth.shape:
            raise ValueError(
                f"predictions[{label!r}] has shape {np.shape(predicted)}, truth {truth.shape}"
            )
    if len(captions) != len(images):
        raise ValueError(f"captions has {len(captions)} entries, images {len(images)}")
    rows, columns = len(predictions), len(images)
    figure, axes = plt.subplots(
        rows,
        columns,
        figsize=(2.2 * columns + 0.6, 2.2 * rows + 0.8),
        squeeze=False,
        layout="constrained",
    )
    for r, (label, predicted) in enumerate(predictions.items()):
        for c in range(columns):
            axis = axes[r, c]
            axis.imshow(images[c], cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
            for k in range(truth.shape[1]):
                _draw_contour(axis, truth[c, k], colors="lime", linewidths=1.0)
                _draw_contour(
                    axis,
                    np.asarray(predicted[c, k], dtype=bool),
                    colors="magenta",
                    linewidths=1.0,
                    linestyles="dashed",
                )
            axis.set_xticks([])
            axis.set_yticks([])
            if r == 0:
                axis.set_title(captions[c], fontsize="small")
            if c == 0:
                axis.set_ylabel(label)
    handles = [
        Line2D([], [], color="lime", linewidth=1.0, label="ground truth"),
        Line2D([], [], color="magenta", linewidth=1.0, linestyle="dashed", label="prediction"),
    ]
    figure.legend(
        handles=handles, loc="outside lower center", ncols=2, fontsize="small", frameon=False
    )
    figure.suptitle(title)
    save_figure(figure, path)
