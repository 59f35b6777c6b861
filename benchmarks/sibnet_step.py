"""Benchmark: the cost of one SIBnet training step, side by side with a cross-entropy step.

Three step kinds, timed interleaved in one process (median of ``--repeats`` after a warm-up):

- ``ce``: forward, softmax cross-entropy, backward, Adam step;
- ``sibnet``: sibnet's step: one forward pass gives the logits and all classes' Grad-CAM maps
  (closed form or head-only autograd, differentiable), plus class distinctiveness and spatial
  coherence computed batched in torch (:class:`sibnet.objectives.SibnetObjective`);
- ``reference``: the original implementation's pattern: captum's ``LayerGradCam`` called once
  per class (a forward and a backward pass each), then, for every map, a NumPy round trip with
  Otsu thresholding (scikit-image) and connected-component labelling (SciPy) whose components
  are scored one by one, skipping the last, as the original code does; the resulting terms are
  added to the cross-entropy step. (Captum's maps are detached, so this reference reproduces
  the original's cost, not its gradients.) It lives here, not in the package.

Run from the repository root (CPU; about 3 minutes on 2 cores):

    python -m benchmarks.sibnet_step [--repeats 7] [--threads 2]

Results are printed and written to benchmarks/results/sibnet_step.json.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from captum.attr import LayerGradCam
from scipy import ndimage
from skimage.filters import threshold_otsu

from benchmarks import write_result
from sibnet.config import MethodParams
from sibnet.engine import task_loss
from sibnet.models.classifier import build_classifier
from sibnet.objectives import build_objective
from sibnet.saliency import default_cam_layer

ROOT = Path(__file__).resolve().parents[1]


def _reference_terms(maps: np.ndarray, kernel_size: int = 9) -> tuple[float, float]:
    """Per-map NumPy processing as in the original code: Otsu, components, SC per component."""
    sc_total = 0.0
    radius = kernel_size // 2
    for per_image in maps:
        for saliency in per_image:
            if saliency.max() == saliency.min():
                continue
            mask = saliency > threshold_otsu(saliency)
            labels, count = ndimage.label(mask)
            for component in range(1, count):  # the original skips the last component
                region = np.where(labels == component, saliency, 0.0)
                padded = np.pad(region, radius)
                for dy in range(-radius, radius + 1):
                    for dx in range(-radius, radius + 1):
                        if dy or dx:
                            shifted = padded[
                                radius + dy : radius + dy + region.shape[0],
                                radius + dx : radius + dx + region.shape[1],
                            ]
                            sc_total += float(((region - shifted) ** 2).sum())
    flat = maps.reshape(maps.shape[0], maps.shape[1], -1)
    norms = np.linalg.norm(flat, axis=2, keepdims=True) + 1e-8
    unit = flat / norms
    gram = np.abs(np.einsum("bck,bdk->bcd", unit, unit))
    upper = np.triu_indices(maps.shape[1], k=1)
    return float(gram[:, upper[0], upper[1]].mean()), sc_total / len(maps)


def _steps(architecture: str, classes: int, batch: int, size: int) -> dict[str, Callable]:
    torch.manual_seed(0)
    images = torch.rand(batch, 1, size, size)
    targets = torch.eye(classes)[torch.arange(batch) % classes]
    models = {
        kind: build_classifier(architecture, num_classes=classes).train()
        for kind in ("ce", "sibnet", "reference")
    }
    optimizers = {k: torch.optim.Adam(m.parameters(), lr=1e-4) for k, m in models.items()}
    ce_objective = build_objective(MethodParams(), "multiclass")
    sibnet_objective = build_objective(MethodParams(objective="sibnet"), "multiclass")
    cross_entropy = task_loss("multiclass")

    def step(kind: str) -> None:
        model, optimizer = models[kind], optimizers[kind]
        optimizer.zero_grad(set_to_none=True)
        if kind == "reference":
            explainer = LayerGradCam(model, default_cam_layer(model))
            maps = torch.cat(
                [
                    explainer.attribute(images, target=c, relu_attributions=True)
                    for c in range(classes)
                ],
                dim=1,
            )
            cd, sc = _reference_terms(maps.detach().cpu().numpy())
            loss = cross_entropy(model(images), targets) + 1.2 * cd + 0.9 * sc
        else:
            objective = ce_objective if kind == "ce" else sibnet_objective
            loss, _ = objective(model, images, targets)
        loss.backward()
        optimizer.step()

    return {kind: (lambda kind=kind: step(kind)) for kind in models}


def measure(architecture: str, classes: int, batch: int, size: int, repeats: int) -> dict:
    steps = _steps(architecture, classes, batch, size)
    for run in steps.values():  # warm-up (and the SIBnet term scales)
        run()
    times: dict[str, list[float]] = {kind: [] for kind in steps}
    for _ in range(repeats):
        for kind, run in steps.items():
            started = time.perf_counter()
            run()
            times[kind].append(time.perf_counter() - started)
    median = {kind: statistics.median(values) for kind, values in times.items()}
    return {
        "architecture": architecture,
        "classes": classes,
        "batch": batch,
        "image_size": size,
        "median_seconds": median,
        "sibnet_over_ce": median["sibnet"] / median["ce"],
        "reference_over_sibnet": median["reference"] / median["sibnet"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    results = [
        measure("resnet10_small", classes=5, batch=32, size=128, repeats=args.repeats),
        measure("densenet121", classes=5, batch=16, size=224, repeats=max(3, args.repeats // 2)),
    ]
    out = ROOT / "benchmarks" / "results" / "sibnet_step.json"
    payload = {"device": "cpu", "threads": args.threads, "results": results}
    write_result(out, payload)
    for row in results:
        seconds = row["median_seconds"]
        print(
            f"{row['architecture']:>15} {row['image_size']}px batch {row['batch']}: "
            f"ce {seconds['ce']:.3f}s  sibnet {seconds['sibnet']:.3f}s  "
            f"reference {seconds['reference']:.3f}s  sibnet/ce {row['sibnet_over_ce']:.2f}x  "
            f"reference/sibnet {row['reference_over_sibnet']:.1f}x"
        )


if __name__ == "__main__":
    main()
