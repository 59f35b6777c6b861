"""Benchmark: the cost of one SIBnet training step, per formulation, beside a cross-entropy step.

Step kinds, timed interleaved in one process (median of ``--repeats`` after a warm-up), at the
default training size (``resnet10_small``, batch 16, 128 × 128 images, 5 classes):

- ``ce``: forward, softmax cross-entropy, backward, Adam step;
- ``sibnet``: the shipped ``sibnet`` method of params.yaml (one forward pass gives the logits and
  all classes' Grad-CAM maps, CD and SC batched in torch; see ``SibnetObjective``);
- one kind per formulation option, each toggled alone on the shipped method (``signed maps``,
  ``alpha constant``, ``sc input nearest`` / ``bilinear``, ``erosion foreground``, ``window
  clip``, ``components``, ``components skip last``, ``reference weighting``, ``warm-up ramp``,
  ``faithfulness``), and their combination of the original code, ``sibnet_reference``;
- ``original code``: the original implementation's pattern: captum's ``LayerGradCam`` called
  once per class (a forward and a backward pass each), the signed maps nearest-upsampled to the
  input, then, for every map, a NumPy round trip with Otsu thresholding (scikit-image), an
  erosion and connected-component labelling (SciPy) whose components are scored one by one,
  skipping the last, as the original code does; the terms are added to the cross-entropy step.
  The original scores each component with Python loops over pixels and window positions (about
  a million iterations per 128 × 128 map); here they are vectorised over the 81 offsets, so
  this is a lower bound of its cost. (Captum's maps are detached: this reproduces the
  original's cost, not its gradients.) It lives here, not in the package.

Run from the repository root (CPU; a few minutes on 2 cores):

    python -m benchmarks.sibnet_step [--repeats 7] [--threads 2]

Results are printed and written to benchmarks/results/sibnet_step.json.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from captum.attr import LayerGradCam
from scipy import ndimage
from skimage.filters import threshold_otsu

from benchmarks import interleaved_medians, write_result
from sibnet.config import MethodParams, load_params
from sibnet.losses import build_objective, task_loss
from sibnet.models.classifier import build_classifier
from sibnet.objectives import CrossEntropyParams
from sibnet.saliency import default_cam_layer

ROOT = Path(__file__).resolve().parents[1]
TARGET_OVER_CE = 1.3  # issue 15: every formulation option within 1.3× a cross-entropy step


def _window_sum(m: np.ndarray, radius: int) -> float:
    """Σ over pixels and their window positions inside the image of the squared difference
    (the original code loops over pixels in Python; vectorised over offsets here)."""
    h, w = m.shape
    total = 0.0
    for dy in range(-radius, radius + 1):
        for dx in range(-radius, radius + 1):
            a = m[max(0, -dy) : h - max(0, dy), max(0, -dx) : w - max(0, dx)]
            b = m[max(0, dy) : h - max(0, -dy), max(0, dx) : w - max(0, -dx)]
            total += float(((a - b) ** 2).sum())
    return total


def _reference_terms(maps: np.ndarray, size: int, kernel_size: int = 9) -> tuple[float, float]:
    """Per-map NumPy processing as in the original code: the maps nearest-upsampled to the
    input, Otsu, an erosion keeping border pixels, 8-connected components, SC per component
    but the last (window clipped at the border); CD on the layer's maps."""
    sc_total = 0.0
    factor = size // maps.shape[-1]
    for per_image in maps:
        for saliency in per_image:
            up = np.kron(saliency, np.ones((factor, factor), dtype=saliency.dtype))
            if up.max() == up.min():
                continue
            mask = ndimage.binary_erosion(up > threshold_otsu(up), border_value=1)
            labels, count = ndimage.label(mask, structure=np.ones((3, 3)))
            for component in range(1, count):  # the original skips the last component
                sc_total += _window_sum(np.where(labels == component, up, 0.0), kernel_size // 2)
    flat = maps.reshape(maps.shape[0], maps.shape[1], -1)
    norms = np.linalg.norm(flat, axis=2, keepdims=True) + 1e-8
    unit = flat / norms
    gram = np.abs(np.einsum("bck,bdk->bcd", unit, unit))
    upper = np.triu_indices(maps.shape[1], k=1)
    return float(gram[:, upper[0], upper[1]].mean()), sc_total


def _kinds() -> dict[str, MethodParams | None]:
    """The step kinds: ``None`` for the original code's pattern, else a method."""
    shipped = load_params(ROOT / "params.yaml")
    sibnet = shipped.methods["sibnet"].model_dump()
    options = {
        "signed maps": {"cam_relu": not sibnet["cam_relu"]},
        "alpha constant": {"cam_alpha_grad": False},
        "sc input nearest": {"sc_resolution": "input", "sc_upsample": "nearest"},
        "sc input bilinear": {"sc_resolution": "input", "sc_upsample": "bilinear"},
        "erosion foreground": {"sc_erosion_border": "foreground"},
        "window clip": {"sc_window_border": "clip"},
        "components": {"sc_regions": "components"},
        "components skip last": {"sc_regions": "components_skip_last"},
        "reference weighting": {
            "normalize_task": True,
            "task_weighting": "batch_inverse_frequency",
            "sc_reduction": "sum",
        },
        "warm-up ramp": {"warmup": "ramp", "warmup_epochs": 1},
        "faithfulness": {"lambda_faith": 0.3},
    }
    kinds: dict[str, MethodParams | None] = {
        "ce": CrossEntropyParams(),
        "sibnet": shipped.methods["sibnet"],
    }
    for name, change in options.items():
        keys = {**sibnet, **change}
        if keys["sc_resolution"] == "layer":
            keys.pop("sc_upsample", None)
        kinds[name] = MethodParams.model_validate(keys)
    kinds["sibnet_reference"] = shipped.methods["sibnet_reference"]
    kinds["original code"] = None
    return kinds


def _steps(architecture: str, classes: int, batch: int, size: int) -> dict[str, Callable]:
    torch.manual_seed(0)
    images = torch.rand(batch, 1, size, size)
    targets = torch.eye(classes)[torch.arange(batch) % classes]
    cross_entropy = task_loss("multiclass")
    steps = {}
    for kind, method in _kinds().items():
        model = build_classifier(architecture, num_classes=classes).train()
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
        objective = None if method is None else build_objective(method, "multiclass")
        if objective is not None:
            objective.begin_epoch(2, 1)  # past a one-epoch warm-up: every term on

        def step(model=model, optimizer=optimizer, objective=objective) -> None:
            optimizer.zero_grad(set_to_none=True)
            if objective is None:
                explainer = LayerGradCam(model, default_cam_layer(model))
                maps = torch.cat(
                    [explainer.attribute(images, target=c) for c in range(classes)],
                    dim=1,
                )
                cd, sc = _reference_terms(maps.detach().cpu().numpy(), size)
                loss = cross_entropy(model(images), targets) + cd + sc
            else:
                loss, _ = objective(model, {"image": images, "target": targets})
            loss.backward()
            optimizer.step()

        steps[kind] = step
    return steps


def measure(architecture: str, classes: int, batch: int, size: int, repeats: int) -> dict:
    steps = _steps(architecture, classes, batch, size)
    median = interleaved_medians(steps, repeats)  # the warm-up sets the SIBnet term scales
    return {
        "architecture": architecture,
        "classes": classes,
        "batch": batch,
        "image_size": size,
        "median_seconds": median,
        "over_ce": {kind: seconds / median["ce"] for kind, seconds in median.items()},
        "target_over_ce": TARGET_OVER_CE,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    result = measure("resnet10_small", classes=5, batch=16, size=128, repeats=args.repeats)
    out = ROOT / "benchmarks" / "results" / "sibnet_step.json"
    write_result(out, {"device": "cpu", "threads": args.threads, "results": [result]})
    for kind, seconds in result["median_seconds"].items():
        ratio = result["over_ce"][kind]
        print(f"{kind:>22}: {seconds:.3f} s  {ratio:.2f}x ce")


if __name__ == "__main__":
    main()
