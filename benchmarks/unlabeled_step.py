"""Benchmark: a SIBnet+ training step (labeled + unlabeled images) against a labeled-only one.

Step kinds, timed interleaved in one process (median of ``--repeats`` after a warm-up), at the
default training size (``resnet10_small``, 128 × 128 images, 5 classes, a labeled batch of 16):

- ``ce``: the cross-entropy step on the 16 labeled images;
- ``sibnet``: the shipped ``sibnet`` method of params.yaml on the 16 labeled images;
- ``sibnet+``: the same method with ``unlabeled: use`` and the default ``unlabeled_ratio`` 0.5
  (ratio 1:2, unlabeled to labeled): 8 unlabeled images joined to the 16
  (:func:`sibnet.data.tensors.with_unlabeled`, timed), one forward pass over all 24, the task
  loss on the 16, CD and SC on the 24;
- ``entropy min``: the semi-supervised reference (``objective: entropy_minimization``) on the
  same 16 + 8;
- ``sibnet 24``: the shipped ``sibnet`` on 24 labeled images, the cost of the images alone
  (what ``sibnet+`` costs beyond it is the handling of the unlabeled ones).

Each step is the whole optimiser step (join, forward, loss, backward, Adam). Run from the
repository root (CPU; about a minute on 2 cores):

    python -m benchmarks.unlabeled_step [--repeats 15] [--threads 2]

Results are printed and written to benchmarks/results/unlabeled_step.json.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

import torch

from benchmarks import interleaved_medians, write_result
from sibnet.config import MethodParams, load_params
from sibnet.data.tensors import Batch, with_unlabeled
from sibnet.losses import build_objective
from sibnet.models.classifier import build_classifier
from sibnet.objectives import CrossEntropyParams, EntropyMinimizationParams

ROOT = Path(__file__).resolve().parents[1]
TARGET_OVER_SIBNET = 1.6  # issue 18: a step with unlabeled images (1:2) ≤ 1.6× a SIBnet step


def _kinds(batch: int, unlabeled: int) -> dict[str, tuple[MethodParams, int, int]]:
    """Step kind → (method, labeled images, unlabeled images joined to them)."""
    shipped = load_params(ROOT / "params.yaml").methods["sibnet"]
    plus = MethodParams.model_validate({**shipped.model_dump(), "unlabeled": "use"})
    return {
        "ce": (CrossEntropyParams(), batch, 0),
        "sibnet": (shipped, batch, 0),
        "sibnet+": (plus, batch, unlabeled),
        "entropy min": (EntropyMinimizationParams(unlabeled="use"), batch, unlabeled),
        f"sibnet {batch + unlabeled}": (shipped, batch + unlabeled, 0),
    }


def _steps(
    classes: int, batch: int, unlabeled: int, size: int
) -> tuple[dict[str, Callable[[], None]], dict[str, int]]:
    torch.manual_seed(0)
    images = torch.rand(batch + unlabeled, 1, size, size)
    targets = torch.eye(classes)[torch.arange(batch + unlabeled) % classes]
    steps, counts = {}, {}
    for kind, (method, n, m) in _kinds(batch, unlabeled).items():
        model = build_classifier("resnet10_small", num_classes=classes).train()
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
        objective = build_objective(method, "multiclass")
        labeled: Batch = {"image": images[:n], "target": targets[:n]}
        extra: Batch = {
            "image": images[n : n + m],
            "target": torch.full((m, classes), -1.0),  # the stored placeholders
        }
        counts[kind] = n + m

        def step(
            model=model, optimizer=optimizer, objective=objective, labeled=labeled, extra=extra
        ) -> None:
            optimizer.zero_grad(set_to_none=True)
            joined = with_unlabeled(labeled, extra) if len(extra["image"]) else labeled
            loss, _ = objective(model, joined)
            loss.backward()
            optimizer.step()

        steps[kind] = step
    return steps, counts


def measure(classes: int, batch: int, unlabeled: int, size: int, repeats: int) -> dict:
    steps, images = _steps(classes, batch, unlabeled, size)
    median = interleaved_medians(steps, repeats)  # the warm-up sets the SIBnet term scales
    return {
        "architecture": "resnet10_small",
        "classes": classes,
        "labeled_batch": batch,
        "unlabeled_batch": unlabeled,
        "image_size": size,
        "images_per_step": images,
        "median_seconds": median,
        "over_sibnet": {kind: seconds / median["sibnet"] for kind, seconds in median.items()},
        "target_over_sibnet": TARGET_OVER_SIBNET,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    result = measure(classes=5, batch=16, unlabeled=8, size=128, repeats=args.repeats)
    out = ROOT / "benchmarks" / "results" / "unlabeled_step.json"
    write_result(out, {"device": "cpu", "threads": args.threads, "results": [result]})
    for kind, seconds in result["median_seconds"].items():
        ratio, images = result["over_sibnet"][kind], result["images_per_step"][kind]
        print(f"{kind:>12}: {seconds:.3f} s  {ratio:.2f}x sibnet  ({images} images)")


if __name__ == "__main__":
    main()
