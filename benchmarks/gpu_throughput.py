"""Benchmark: training throughput on a GPU, plain cross-entropy against SIBnet, side by side.

DenseNet-121 (the paper's network, :func:`sibnet.models.classifier.build_classifier`), 5
classes, one input channel, synthetic images and one-hot targets created once on the device
(no data loading is timed). Each step: ``zero_grad``, the objective under
``torch.autocast(dtype=torch.bfloat16)`` (``--precision bf16``, default), backward, Adam step —
the same as :func:`sibnet.engine.train_epoch`. Model and batches are in ``channels_last``
unless ``--no-channels-last``. Two objectives (:func:`sibnet.losses.build_objective`):

- ``ce``: softmax cross-entropy;
- ``sibnet``: cross-entropy + 1.2 · CD + 0.9 · SC on every class's Grad-CAM map (the paper's
  weights, terms normalised by their first-step values, 9×9 SC kernel). DenseNet-121's maps come
  from head-only autograd (one gradient per class), computed in float32 under bf16.

For each objective: ``--warmup`` untimed steps, then ``--rounds`` rounds of ``--steps`` timed
steps, the two objectives alternating round by round; ``torch.cuda.synchronize()`` brackets
every timed round on CUDA. Images/s is the median over rounds. By default torch is configured
as the training stage configures it (:func:`sibnet.reproducibility.configure_torch`:
deterministic algorithms, warn-only on CUDA, ``cudnn.benchmark`` off); ``--fast`` turns
deterministic algorithms off and ``cudnn.benchmark`` on.

Target (the HPC issue): SIBnet ≥ 0.83× the cross-entropy images/s on a GPU (bf16,
channels-last, batch 64, 224×224).

Run from the repository root on a GPU machine:

    python -m benchmarks.gpu_throughput                      # cuda, batch 64, 224×224

CPU smoke test (numbers are no GPU figure):

    python -m benchmarks.gpu_throughput --device cpu --steps 2 --batch 4 --size 64

Results are printed and written to benchmarks/results/gpu_throughput.json (``--out``).
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from pathlib import Path
from typing import Any

import torch

from benchmarks import write_result
from sibnet.config import MethodParams
from sibnet.engine import autocast, resolve_device
from sibnet.losses import Objective, build_objective
from sibnet.models.classifier import build_classifier
from sibnet.objectives import CrossEntropyParams, SibnetParams
from sibnet.reproducibility import configure_torch

ROOT = Path(__file__).resolve().parents[1]
CLASSES = 5

OBJECTIVES: dict[str, MethodParams] = {
    "ce": CrossEntropyParams(architecture="densenet121"),
    "sibnet": SibnetParams(
        architecture="densenet121",
        lambda_cd=1.2,
        lambda_sc=0.9,
        normalize_terms=True,
        sc_kernel=9,
    ),
}


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Runner:
    """One objective's model, optimiser and synthetic batch, ready to step.

    The batch: ``(B, 1, S, S)`` images in [0, 1] and ``(B, 5)`` one-hot targets, on the device.
    """

    def __init__(self, name: str, args: argparse.Namespace, device: torch.device) -> None:
        torch.manual_seed(0)
        self.name, self.device, self.precision = name, device, args.precision
        memory_format = torch.channels_last if args.channels_last else torch.contiguous_format
        self.model = build_classifier("densenet121", num_classes=CLASSES).to(
            device=device, memory_format=memory_format
        )
        self.model.train()
        self.objective: Objective = build_objective(OBJECTIVES[name], "multiclass").to(device)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=1e-4)
        generator = torch.Generator().manual_seed(1)
        images = torch.rand(args.batch, 1, args.size, args.size, generator=generator)
        self.images = images.to(device).contiguous(memory_format=memory_format)
        labels = torch.randint(0, CLASSES, (args.batch,), generator=generator)
        self.targets = torch.nn.functional.one_hot(labels, CLASSES).float().to(device)
        self.losses: list[float] = []

    def step(self) -> torch.Tensor:
        self.optimizer.zero_grad(set_to_none=True)
        with autocast(self.device, self.precision):
            batch = {"image": self.images, "target": self.targets}
            loss, _ = self.objective(self.model, batch)
        loss.backward()
        self.optimizer.step()
        return loss.detach()

    def timed(self, steps: int) -> float:
        """Seconds for ``steps`` steps, the device synchronised before and after."""
        _synchronize(self.device)
        started = time.perf_counter()
        for _ in range(steps):
            loss = self.step()
        _synchronize(self.device)
        elapsed = time.perf_counter() - started
        self.losses.append(float(loss))
        return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--precision", default="bf16", choices=["fp32", "bf16"])
    parser.add_argument("--no-channels-last", dest="channels_last", action="store_false")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--steps", type=int, default=20, help="timed steps per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--fast", action="store_true", help="cudnn.benchmark, not deterministic")
    parser.add_argument(
        "--out", type=Path, default=ROOT / "benchmarks" / "results" / "gpu_throughput.json"
    )
    args = parser.parse_args()

    device = resolve_device(args.device)
    configure_torch(args.threads, warn_only=device.type == "cuda")
    if args.fast:
        torch.use_deterministic_algorithms(False)
        torch.backends.cudnn.benchmark = True
        torch.backends.cudnn.deterministic = False
    runners = {name: Runner(name, args, device) for name in OBJECTIVES}
    for runner in runners.values():
        for _ in range(args.warmup):
            runner.step()
        _synchronize(device)
    seconds: dict[str, list[float]] = {name: [] for name in runners}
    for _ in range(args.rounds):
        for name, runner in runners.items():
            seconds[name].append(runner.timed(args.steps))

    results: dict[str, Any] = {}
    for name, rounds in seconds.items():
        per_round = [args.steps * args.batch / s for s in rounds]
        results[name] = {
            "images_per_s": statistics.median(per_round),
            "images_per_s_rounds": per_round,
            "step_s": statistics.median(rounds) / args.steps,
            "last_loss": runners[name].losses[-1],
        }
    ratio = results["sibnet"]["images_per_s"] / results["ce"]["images_per_s"]
    payload = {
        "device": device.type,
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "host": platform.processor() or platform.machine(),
        "torch": str(torch.__version__),
        "architecture": "densenet121",
        "classes": CLASSES,
        "size": args.size,
        "batch": args.batch,
        "precision": args.precision,
        "channels_last": args.channels_last,
        "deterministic": not args.fast,
        "threads": args.threads,
        "warmup": args.warmup,
        "steps": args.steps,
        "rounds": args.rounds,
        "results": results,
        "sibnet_over_ce": ratio,
        "target_sibnet_over_ce": 0.83,
        "meets_target": ratio >= 0.83,
        "max_memory_gib": (
            torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
        ),
    }
    write_result(args.out, payload)
    for name, row in results.items():
        milliseconds = row["step_s"] * 1e3
        print(f"{name:>6}: {row['images_per_s']:9.1f} images/s  ({milliseconds:.1f} ms/step)")
    print(f"SIBnet / CE throughput: {ratio:.3f}× (target ≥ 0.83×) → {args.out}")


if __name__ == "__main__":
    main()
