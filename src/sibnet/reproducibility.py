"""Seeds and deterministic execution: the same params give the same numbers on a CPU.

Numerical results depend on the number of intra-op threads (reductions are split differently),
so every stage sets it from its params section (``threads``) instead of taking whatever the
scheduler grants; the same params therefore give bit-identical outputs under Snakemake, DVC or
a direct call.
"""

from __future__ import annotations

import os
import random

import numpy as np
import torch

__all__ = ["configure_torch", "seed_everything", "seeded_generator", "worker_init_fn"]


def configure_torch(threads: int) -> None:
    """Fix the thread count and switch on deterministic algorithms."""
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True)
    # Required by deterministic cuBLAS; harmless on the CPU.
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    if torch.backends.cudnn.is_available():
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True


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
