"""The predictions table (``predictions.parquet``): one row per test image, for evaluate and
robustness to write and the report to read (NumPy and pandas only, so the report imports no
network code)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

__all__ = ["predictions_frame", "read_predictions"]


def predictions_frame(
    ids: np.ndarray, targets: np.ndarray, probabilities: np.ndarray, classes: list[str]
) -> pd.DataFrame:
    """One row per image: ``id``, ``labels`` (list of 0/1) and ``prob_<class>`` (float32).

    Args:
        ids: ``(N,)`` image ids.
        targets: ``(N, C)`` 0/1 labels.
        probabilities: ``(N, C)`` predicted probabilities.
        classes: the ``C`` class names.
    """
    return pd.DataFrame(
        {
            "id": ids,
            "labels": [row.tolist() for row in targets],
            **{
                f"prob_{name}": probabilities[:, index].astype(np.float32)
                for index, name in enumerate(classes)
            },
        }
    )


def read_predictions(path: Path, classes: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Inverse of :func:`predictions_frame`: ``(ids (N,), targets (N, C), probs (N, C))``."""
    frame = pd.read_parquet(path)
    missing = [f"prob_{c}" for c in classes if f"prob_{c}" not in frame.columns]
    if missing or "labels" not in frame.columns or "id" not in frame.columns:
        raise ValueError(f"{path}: not a predictions table (missing {missing or ['id/labels']})")
    targets = np.array(frame["labels"].tolist(), dtype=np.int8).reshape(len(frame), len(classes))
    probs = frame[[f"prob_{c}" for c in classes]].to_numpy(np.float64)
    return frame["id"].to_numpy(), targets, probs
