"""Seeds and deterministic execution: the same params give the same numbers on a CPU.

Numerical results depend on the number of intra-op threads (reductions are split differently),
so every stage sets it from its params section (``threads``) instead of taking whatever the
scheduler grants; the same params therefore give bit-identical outputs under Snakemake, DVC or
a direct call.
"""

from __future__ import annotations

import os
import random
import sys
from typing import Any

import numpy as np
import torch

__all__ = [
    "configure_torch",
    "get_rng_state",
    "seed_everything",
    "seeded_generator",
    "set_rng_state",
    "worker_init_fn",
]


def configure_torch(threads: int, *, warn_only: bool = False) -> None:
    """Fix the thread count and switch on deterministic algorithms.

    ``warn_only`` (used for CUDA training): an operation without a deterministic CUDA kernel
    (e.g. the backward pass of adaptive average pooling, which every classifier here ends with)
    warns instead of raising. Bit-identical results are promised on the CPU only.
    """
    torch.set_num_threads(threads)
    _deterministic_algorithms(warn_only)
    # Required by deterministic cuBLAS; harmless on the CPU.
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    if torch.backends.cudnn.is_available():
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True


def _deterministic_algorithms(warn_only: bool) -> None:
    """``torch.use_deterministic_algorithms(True, warn_only=...)`` without its import of the
    TorchInductor compiler (``torch._inductor.config``, about 1 s at every job's start) to set a
    flag of a compiler sibnet never runs: the same switch of ATen
    (``torch._C._set_deterministic_algorithms``). Where the compiler is loaded already (a caller
    compiles), the public function, which sets its flag too."""
    if "torch._inductor.config" in sys.modules:
        torch.use_deterministic_algorithms(True, warn_only=warn_only)
    else:
        torch._C._set_deterministic_algorithms(True, warn_only=warn_only)


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and PyTorch's global generators."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def seeded_generator(seed: int) -> torch.Generator:
    """A CPU ``torch.Generator`` for a ``DataLoader``'s shuffling, seeded explicitly."""
    generator = torch.Generator()
    generator.manual_seed(seed)
    return generator


def worker_init_fn(worker_id: int) -> None:
    """Seed each ``DataLoader`` worker from the loader's generator (PyTorch's recipe)."""
    worker_seed = torch.initial_seed() % 2**32
    np.random.seed(worker_seed)
    random.seed(worker_seed)


def get_rng_state(generators: dict[str, torch.Generator] | None = None) -> dict[str, Any]:
    """Every global generator's state, and ``generators``' (e.g. a ``DataLoader``'s), as data
    ``torch.load(weights_only=True)`` reads: Python's ``random``, NumPy's global generator,
    torch's CPU generator and, where CUDA is initialised, every GPU's."""
    kind, keys, position, has_gauss, cached = np.random.get_state()
    python_version, python_internal, python_gauss = random.getstate()
    return {
        "python": {
            "version": python_version,
            "internal": torch.tensor(python_internal, dtype=torch.int64),
            "gauss": python_gauss,
        },
        "numpy": {
            "kind": kind,
            "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            "position": int(position),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None,
        "generators": {name: g.get_state() for name, g in (generators or {}).items()},
    }


def set_rng_state(
    state: dict[str, Any], generators: dict[str, torch.Generator] | None = None
) -> None:
    """Restore what :func:`get_rng_state` returned (``generators`` by name)."""
    python = state["python"]
    random.setstate(
        (python["version"], tuple(int(v) for v in python["internal"].tolist()), python["gauss"])
    )
    numpy = state["numpy"]
    np.random.set_state(
        (
            numpy["kind"],
            numpy["keys"].numpy().astype(np.uint32),
            numpy["position"],
            numpy["has_gauss"],
            numpy["cached_gaussian"],
        )
    )
    torch.set_rng_state(state["torch"])
    if state["cuda"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    for name, generator in (generators or {}).items():
        generator.set_state(state["generators"][name])
