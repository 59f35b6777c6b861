"""Benchmark: `sibnet prepare` on a large folder dataset (speed, memory, determinism, resume).

Generates ``--images`` 390×320 8-bit greyscale radiograph-like images (PNG and/or JPEG, not
timed), then runs the real CLI, ``sibnet prepare``, on a folder source (224×224, ``pad``, two
decoding workers, shards of 1,024) and measures:

- wall time of two full runs, and the peak resident memory of the whole process tree (the CLI
  plus its spawned workers, summed) and of its largest single process, sampled every 0.1 s;
- that the two runs' outputs are byte-identical (SHA-256 of every file);
- resume: on the first ``--resume-images`` images, a run killed (SIGKILL to its process group)
  once two shards are finished, then rerun: shards reused, the rerun's wall time against an
  uninterrupted run's, and that its output is byte-identical to the uninterrupted run's.

Target (the ingestion issue): 20,000 images to 224×224 in ≤ 3 minutes on 2 cores with peak
memory ≤ 1.5 GB, byte-identical output across two runs. Run from the repository root:

    python -m benchmarks.prepare_scale [--images 20000] [--format png|jpeg|both] [--keep DIR]

Results are printed and written to ``--out`` (default benchmarks/results/prepare_scale.json).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import multiprocessing
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from datetime import date, datetime
from pathlib import Path

import numpy as np
import psutil
import yaml
from PIL import Image

from benchmarks import write_result

ROOT = Path(__file__).resolve().parents[1]
HEIGHT, WIDTH = 390, 320
CLASSES = ["a", "b", "c", "d", "e"]
EXTENSIONS = {"png": "png", "jpeg": "jpg"}
DATASET = "bench"
TARGET_SECONDS = 180.0  # 20,000 images in <= 3 minutes on 2 cores
TARGET_PEAK_BYTES = 1.5e9  # <= 1.5 GB (read strictly: 10^9 bytes, i.e. 1430.5 MiB)
MIB = 2**20
_VARIANTS = 24  # anatomy variants per generating process; images add shift, gain and noise

# --------------------------------------------------------------------------- images


def _anatomy(rng: np.random.Generator) -> np.ndarray:
    """A smooth chest-radiograph-like (HEIGHT, WIDTH) float32 pattern in about [0, 1]: body
    silhouette, two lung fields, mediastinum and ribs, with randomised proportions."""
    y, x = np.mgrid[0:HEIGHT, 0:WIDTH].astype(np.float64)
    v = (y + 0.5) / HEIGHT * 2.0 - 1.0
    u = (x + 0.5) / WIDTH * 2.0 - 1.0
    bw, bh = rng.uniform(0.8, 0.95), rng.uniform(0.95, 1.1)
    body = 1.0 / (1.0 + np.exp(((u / bw) ** 2 + (v / bh) ** 2 - 1.0) * 12.0))
    lungs = np.zeros_like(u)
    for side in (-1.0, 1.0):
        cx, cy = side * rng.uniform(0.36, 0.48), rng.uniform(-0.12, 0.02)
        d = ((u - cx) / rng.uniform(0.25, 0.34)) ** 2 + ((v - cy) / rng.uniform(0.5, 0.7)) ** 2
        lungs += np.exp(-(d**2) * 1.5)
    mediastinum = np.exp(-((u / rng.uniform(0.13, 0.2)) ** 2)) * (v > -0.6)
    ribs = 0.05 * np.sin(v * rng.uniform(24.0, 32.0) + 3.0 * u**2) * lungs
    image = 0.12 + 0.65 * body - 0.35 * lungs + 0.15 * mediastinum + ribs
    return image.astype(np.float32)


_cache: list[np.ndarray] = []


def _image(index: int, seed: int) -> np.ndarray:
    """Image ``index``: an anatomy variant, shifted and rescaled, plus Gaussian noise (σ 0.02),
    as (HEIGHT, WIDTH) uint8; the same ``(index, seed)`` always gives the same pixels."""
    if not _cache:
        variants = np.random.default_rng([seed, 2**31])
        _cache.extend(_anatomy(variants) for _ in range(_VARIANTS))
    rng = np.random.default_rng([seed, index])
    base = _cache[int(rng.integers(_VARIANTS))]
    shifted = np.roll(base, tuple(int(s) for s in rng.integers(-12, 13, size=2)), axis=(0, 1))
    image = shifted * np.float32(rng.uniform(0.85, 1.15)) + np.float32(rng.uniform(-0.05, 0.05))
    image += rng.standard_normal(image.shape, dtype=np.float32) * np.float32(0.02)
    return np.clip(np.rint(image * 255), 0, 255).astype(np.uint8)


def _write_block(task: tuple[list[tuple[str, Path]], int, int, int]) -> int:
    """Write images ``start``..``stop - 1`` in every ``(format, folder)`` of ``targets``."""
    targets, start, stop, seed = task
    for index in range(start, stop):
        picture = Image.fromarray(_image(index, seed))
        for fmt, folder in targets:
            path = folder / "img" / f"{index:05d}.{EXTENSIONS[fmt]}"
            if fmt == "png":
                picture.save(path, format="PNG")
            else:
                picture.save(path, format="JPEG", quality=90)
    return stop - start


def generate(folders: dict[str, Path], n: int, seed: int = 0) -> float:
    """Write ``n`` images into each ``folders[fmt]/img/`` (two processes) plus ``labels.csv``
    (random 0/1 labels for 5 classes); returns the seconds taken."""
    started = time.perf_counter()
    labels = np.random.default_rng(seed).integers(0, 2, size=(n, len(CLASSES)))
    targets = list(folders.items())
    for fmt, folder in targets:
        (folder / "img").mkdir(parents=True, exist_ok=True)
        lines = [",".join(["path", *CLASSES])]
        lines += [
            ",".join([f"img/{i:05d}.{EXTENSIONS[fmt]}", *map(str, labels[i])]) for i in range(n)
        ]
        (folder / "labels.csv").write_text("\n".join(lines) + "\n")
    blocks = [(targets, s, min(n, s + 250), seed) for s in range(0, n, 250)]
    with multiprocessing.get_context("spawn").Pool(2) as pool:
        done = 0
        for count in pool.imap_unordered(_write_block, blocks):
            done += count
            print(f"\rgenerating {done}/{n} images", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    return time.perf_counter() - started


def subset_csv(folder: Path, n: int) -> str:
    """Write ``labels-<n>.csv`` beside ``labels.csv`` with its first ``n`` rows; its name."""
    name = f"labels-{n}.csv"
    lines = (folder / "labels.csv").read_text().splitlines()
    (folder / name).write_text("\n".join(lines[: n + 1]) + "\n")
    return name


# --------------------------------------------------------------------------- running prepare


def _cli() -> list[str]:
    """The installed ``sibnet`` console script beside this interpreter (else on PATH)."""
    script = Path(sys.executable).parent / "sibnet"
    return [str(script) if script.is_file() else shutil.which("sibnet") or "sibnet"]


def write_params(path: Path, root: Path, csv: str, *, workers: int, shard_size: int) -> Path:
    params = {
        "prepare": {
            "dataset": DATASET,
            "source": "folder",
            "size": 224,
            "resize": "pad",
            "workers": workers,
            "shard_size": shard_size,
            "folder": {
                "root": str(root),
                "csv": csv,
                "path_column": "path",
                "task": "multilabel",
                "classes": CLASSES,
            },
        },
        "segment": {"structures": []},
        "tracking": {"enabled": False},
    }
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return path


class _Sampler:
    """Samples, every 0.1 s, the summed RSS of a process and all its descendants."""

    def __init__(self, pid: int) -> None:
        self.process = psutil.Process(pid)
        self.peak_tree = self.peak_single = self.processes = 0
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._done.is_set():
            with contextlib.suppress(psutil.Error):
                members = [self.process, *self.process.children(recursive=True)]
                sizes = []
                for member in members:
                    with contextlib.suppress(psutil.Error):  # ended meanwhile
                        sizes.append(member.memory_info().rss)
                self.peak_tree = max(self.peak_tree, sum(sizes))
                self.peak_single = max(self.peak_single, max(sizes, default=0))
                self.processes = max(self.processes, len(sizes))
            time.sleep(0.1)

    def stop(self) -> None:
        self._done.set()
        self._thread.join()


def _start(params: Path, output: Path, log: Path, cwd: Path) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    with open(log, "w") as stderr:
        return subprocess.Popen(
            [*_cli(), "prepare", "--params", str(params), "--prepared", str(output)],
            cwd=cwd,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            start_new_session=True,  # its own process group: killable with its workers
        )


def run_prepare(params: Path, output: Path, log: Path, cwd: Path) -> dict[str, float]:
    """Run ``sibnet prepare`` to completion; wall seconds, peak memory (MiB), and when (seconds
    after the start) its log reported the first and the last shard it decoded."""
    clock = time.time()
    started = time.perf_counter()
    process = _start(params, output, log, cwd)
    sampler = _Sampler(process.pid)
    code = process.wait()
    seconds = time.perf_counter() - started
    sampler.stop()
    if code != 0:
        raise SystemExit(f"sibnet prepare failed ({code}):\n{log.read_text()[-5000:]}")
    shards = [
        datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp() - clock
        for m in re.finditer(r"^(\S+ \S+) INFO \S+: shard \d+/\d+:", log.read_text(), re.M)
    ]
    return {
        "wall_seconds": round(seconds, 2),
        "first_shard_logged_s": round(shards[0], 2) if shards else None,
        "last_shard_logged_s": round(shards[-1], 2) if shards else None,
        "peak_rss_tree_mib": round(sampler.peak_tree / MIB, 1),
        "peak_rss_single_mib": round(sampler.peak_single / MIB, 1),
        "processes": sampler.processes,
    }


def interrupt_prepare(params: Path, output: Path, log: Path, cwd: Path, shards: int) -> int:
    """Start ``sibnet prepare``, SIGKILL its process group once ``shards`` chunks are finished
    in the work folder; return the number of finished chunks found just before the kill."""
    work = output.parent / f".{output.name}.partial"
    process = _start(params, output, log, cwd)
    try:
        while process.poll() is None:
            finished = len(list(work.glob("chunk-*.json"))) if work.is_dir() else 0
            if finished >= shards:
                os.killpg(process.pid, signal.SIGKILL)
                break
            time.sleep(0.02)
        else:
            raise SystemExit("sibnet prepare finished before it could be interrupted")
    finally:
        process.wait()
    if output.exists():
        raise SystemExit(f"{output} exists after the interrupted run")
    return finished


def tree_hashes(folder: Path) -> dict[str, str]:
    """SHA-256 of every file under ``folder``, by relative path."""
    hashes = {}
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            digest = hashlib.sha256()
            with open(path, "rb") as handle:
                while chunk := handle.read(1 << 20):
                    digest.update(chunk)
            hashes[path.relative_to(folder).as_posix()] = digest.hexdigest()
    return hashes


def _leftovers(parent: Path) -> list[str]:
    """Hidden work or temporary folders left beside an output (there should be none)."""
    return sorted(p.name for p in parent.iterdir() if p.name.startswith("."))


# --------------------------------------------------------------------------- one format


def bench_format(
    fmt: str, data: Path, scratch: Path, args: argparse.Namespace
) -> dict[str, object]:
    """Two full runs and the resume check on ``data`` (a generated folder of ``fmt``)."""
    base = scratch / fmt
    base.mkdir(parents=True, exist_ok=True)
    options = {"workers": args.workers, "shard_size": args.shard_size}
    params = write_params(base / "params.yaml", data, "labels.csv", **options)
    runs = []
    outputs = []
    for number in (1, 2):
        output = base / f"run{number}" / DATASET
        print(f"[{fmt}] full run {number}: {args.images} images", file=sys.stderr, flush=True)
        measured = run_prepare(params, output, base / f"run{number}.log", base)
        measured["images_per_second"] = round(args.images / measured["wall_seconds"], 1)
        measured["leftovers"] = _leftovers(output.parent)
        runs.append(measured)
        outputs.append(output)
        print(f"[{fmt}]   {json.dumps(measured)}", file=sys.stderr, flush=True)
    first, second = tree_hashes(outputs[0]), tree_hashes(outputs[1])
    dataset = json.loads((outputs[0] / "dataset.json").read_text())
    size_bytes = sum(p.stat().st_size for p in outputs[0].rglob("*") if p.is_file())
    if not args.keep:
        for output in outputs:
            shutil.rmtree(output.parent)

    n = min(args.resume_images, args.images)
    csv = subset_csv(data, n)
    small = write_params(base / "params-resume.yaml", data, csv, **options)
    reference = base / "resume-reference" / DATASET
    resumed = base / "resume" / DATASET
    print(f"[{fmt}] resume check: {n} images", file=sys.stderr, flush=True)
    uninterrupted = run_prepare(small, reference, base / "resume-reference.log", base)
    finished = interrupt_prepare(small, resumed, base / "resume-killed.log", base, shards=2)
    work = resumed.parent / f".{resumed.name}.partial"
    kept = len(list(work.glob("chunk-*.json")))
    rerun = run_prepare(small, resumed, base / "resume-rerun.log", base)
    log = (base / "resume-rerun.log").read_text()
    match = re.search(r"resumed (\d+) of (\d+) shards", log)
    resume = {
        "images": n,
        "shards_finished_at_kill": finished,
        "shards_in_work_folder_after_kill": kept,
        "shards_reused": int(match.group(1)) if match else 0,
        "shards_total": int(match.group(2)) if match else None,
        "uninterrupted": uninterrupted,
        "rerun_after_kill": rerun,
        "rerun_over_uninterrupted": round(rerun["wall_seconds"] / uninterrupted["wall_seconds"], 3),
        "byte_identical_to_uninterrupted": tree_hashes(reference) == tree_hashes(resumed),
        "leftovers": _leftovers(resumed.parent),
    }
    print(f"[{fmt}]   {json.dumps(resume)}", file=sys.stderr, flush=True)
    if not args.keep:
        shutil.rmtree(reference.parent)
        shutil.rmtree(resumed.parent)
    return {
        "runs": runs,
        "byte_identical": first == second,
        "files": len(first),
        "output_bytes": size_bytes,
        "shards": len(dataset["shards"]),
        "split_counts": dataset["split_counts"],
        "resume": resume,
    }


def _targets_met(result: dict[str, object], images: int) -> dict[str, bool]:
    runs = result["runs"]
    return {
        "seconds": images >= 20_000 and max(r["wall_seconds"] for r in runs) <= TARGET_SECONDS,
        "peak_memory": max(r["peak_rss_tree_mib"] for r in runs) * MIB <= TARGET_PEAK_BYTES,
        "byte_identical": bool(result["byte_identical"]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=20_000)
    parser.add_argument("--format", choices=["png", "jpeg", "both"], default="both")
    parser.add_argument("--resume-images", type=int, default=4096)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--shard-size", type=int, default=1024)
    parser.add_argument("--keep", type=Path, help="work in this folder and keep everything")
    parser.add_argument(
        "--out", type=Path, default=ROOT / "benchmarks" / "results" / "prepare_scale.json"
    )
    args = parser.parse_args()
    if args.resume_images < 3 * args.shard_size:
        raise SystemExit("--resume-images must cover at least 3 shards (kill after 2)")
    formats = ["png", "jpeg"] if args.format == "both" else [args.format]
    if args.keep and args.keep.exists() and any(args.keep.iterdir()):
        raise SystemExit(f"--keep {args.keep}: not empty; the benchmark must start from nothing")
    results: dict[str, object] = {}
    load_before = os.getloadavg()
    with contextlib.ExitStack() as stack:
        if args.keep:
            scratch = args.keep
            scratch.mkdir(parents=True, exist_ok=True)
        else:
            scratch = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        data = {fmt: scratch / f"data-{fmt}" for fmt in formats}
        generation = generate(data, args.images)
        print(f"generated in {generation:.1f} s", file=sys.stderr, flush=True)
        for fmt in formats:
            source_bytes = sum(p.stat().st_size for p in (data[fmt] / "img").iterdir())
            result = bench_format(fmt, data[fmt], scratch / "out", args)
            result["source_mib"] = round(source_bytes / MIB, 1)
            result["targets_met"] = _targets_met(result, args.images)
            results[fmt] = result
    payload = {
        "date": date.today().isoformat(),
        "images": args.images,
        "image_size": [HEIGHT, WIDTH],
        "prepared_size": [224, 224],
        "resize": "pad",
        "workers": args.workers,
        "shard_size": args.shard_size,
        "generation_seconds": round(generation, 1),
        "targets": {
            "wall_seconds": TARGET_SECONDS,
            "peak_rss_tree_bytes": TARGET_PEAK_BYTES,
            "byte_identical": True,
        },
        "formats": results,
        "machine": {
            "cpus": psutil.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
            # other work on the machine skews the timings: 1-minute load before and after
            "load_average_1min": [round(load_before[0], 2), round(os.getloadavg()[0], 2)],
        },
        "notes": "memory in MiB (2**20 bytes), resident set sizes summed over the process "
        "tree (shared pages counted once per process); source images are in the page cache "
        "(just written)",
    }
    write_result(args.out, payload)
    print(json.dumps(payload, indent=2))
    for fmt, result in results.items():
        runs = result["runs"]
        resume = result["resume"]
        print(
            f"{fmt}: {args.images} images in {runs[0]['wall_seconds']:.1f} s / "
            f"{runs[1]['wall_seconds']:.1f} s, peak tree RSS "
            f"{max(r['peak_rss_tree_mib'] for r in runs):.0f} MiB, byte-identical "
            f"{result['byte_identical']}; resume: {resume['shards_reused']} of "
            f"{resume['shards_total']} shards reused, rerun {resume['rerun_over_uninterrupted']}× "
            f"uninterrupted, identical {resume['byte_identical_to_uninterrupted']}; "
            f"targets met {result['targets_met']}"
        )


if __name__ == "__main__":
    main()
