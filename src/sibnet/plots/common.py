"""The PNG writer every figure module shares (the backend is set by :mod:`sibnet.plots`)."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt

from sibnet.files import atomic_file

__all__ = ["save_figure"]


def save_figure(figure: plt.Figure, path: str | Path) -> None:
    """Write ``figure`` to ``path`` as a PNG with reproducible bytes, atomically; close it."""
    try:
        with atomic_file(path) as tmp:
            figure.savefig(
                tmp, format="png", dpi=120, bbox_inches="tight", metadata={"Software": None}
            )
    finally:
        plt.close(figure)
