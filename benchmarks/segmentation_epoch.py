"""Benchmark: a decoder-only (frozen-encoder) segmentation epoch against an end-to-end epoch.

The paper's transfer recipe trains only a decoder under a frozen encoder; with no backward pass
through the encoder (it runs under ``torch.no_grad()``), a decoder-only epoch should cost much
less than training the same segmenter end to end. Both epochs run in one process, interleaved,
on the same phantom images and lung masks, from the same classifier weights; the median of
``--repeats`` epochs of each is reported. Target (issue 5): decoder-only ≤ 0.75× end-to-end.

    python -m benchmarks.segmentation_epoch [--images 320] [--size 128] [--batch 16]
        [--threads 2] [--repeats 3] [--architectures resnet10_small densenet121]

Results are printed and written to benchmarks/results/segmentation_epoch.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from benchmarks import write_result
from sibnet.data.phantom_images import ORGANS, make_phantom
from sibnet.models.classifier import build_classifier
from sibnet.models.segmenter import Segmenter, segmentation_loss

ROOT = Path(__file__).resolve().parents[1]


def _epoch(model: Segmenter, images: torch.Tensor, masks: torch.Tensor, batch: int) -> float:
    """Seconds of one training epoch (forward, loss, backward, Adam step per batch)."""
    optimizer = torch.optim.Adam(model.trainable_parameters(), lr=1e-3)
    loss_fn = segmentation_loss()
    model.train()
    started = time.perf_counter()
    for start in range(0, len(images), batch):
        x, y = images[start : start + batch], masks[start : start + batch]
        optimizer.zero_grad(set_to_none=True)
        loss_fn(model(x), y).backward()
        optimizer.step()
    return time.perf_counter() - started


def measure(architecture: str, images, masks, *, batch: int, repeats: int) -> dict[str, float]:
    torch.manual_seed(0)
    weights = build_classifier(architecture, num_classes=5).state_dict()
    models = {}
    for mode in ("frozen", "finetune"):
        classifier = build_classifier(architecture, num_classes=5)
        classifier.load_state_dict(weights)
        models[mode] = Segmenter(classifier, architecture, masks.shape[1], mode=mode)
    for model in models.values():  # warm-up
        _epoch(model, images[: 2 * batch], masks[: 2 * batch], batch)
    times: dict[str, list[float]] = {mode: [] for mode in models}
    for _ in range(repeats):
        for mode, model in models.items():
            times[mode].append(_epoch(model, images, masks, batch))
    frozen, end_to_end = (statistics.median(times[m]) for m in ("frozen", "finetune"))
    return {
        "decoder_only_epoch_s": round(frozen, 3),
        "end_to_end_epoch_s": round(end_to_end, 3),
        "ratio": round(frozen / end_to_end, 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=320)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--architectures", nargs="+", default=["resnet10_small", "resnet18", "densenet121"]
    )
    parser.add_argument(
        "--out", type=Path, default=ROOT / "benchmarks" / "results" / "segmentation_epoch.json"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    phantom = make_phantom(args.images, args.size, seed=0)
    images = torch.from_numpy(phantom.images)
    lungs = [ORGANS.index("lung_left"), ORGANS.index("lung_right")]
    masks = torch.from_numpy(phantom.organ_masks[:, lungs].astype("float32"))
    result = {
        "images": args.images,
        "size": args.size,
        "batch": args.batch,
        "threads": args.threads,
        "repeats": args.repeats,
        "target_ratio": 0.75,
        "architectures": {
            name: measure(name, images, masks, batch=args.batch, repeats=args.repeats)
            for name in args.architectures
        },
    }
    write_result(args.out, result)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
