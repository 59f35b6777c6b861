"""Decoding one planned image file: the part of ingestion that runs in worker processes.

Kept apart from :mod:`sibnet.data.ingest` so that a worker imports only numpy, Pillow and
pydicom (:mod:`sibnet.data.images`), not torch or pandas: workers start fast and stay small.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from sibnet.data.images import ImageError, fit_image, fit_mask, read_image, read_mask, to_uint8
from sibnet.data.plan import ImageSettings, Record
from sibnet.data.problems import Problem

__all__ = ["ImageSettings", "Record", "decode_record"]


def decode_record(task: tuple[Record, ImageSettings]) -> dict[str, Any]:
    """Decode one ``(record, settings)`` (in a worker process).

    Returns:
        ``{"image": (h, w) uint8, "source_sha256": str, "lesion_masks": (C, h, w) bool or None,
        "organ_masks": (K, h, w) bool or None}``, or ``{"problem": Problem}``.
    """
    record, settings = task

    def problem(reason: str) -> dict[str, Any]:
        return {"problem": Problem(record.table, record.row, reason)}

    try:
        image, digest = read_image(record.path, intensity=settings.intensity)
    except ImageError as error:
        return problem(f"image {record.source}: {error}")
    out: dict[str, Any] = {
        "image": to_uint8(fit_image(image, settings.size, settings.resize)),
        "source_sha256": digest,
    }
    for key, files in (("lesion_masks", record.lesion_masks), ("organ_masks", record.organ_masks)):
        if files is None:
            out[key] = None
            continue
        masks = np.zeros((len(files), *settings.size), dtype=bool)
        for channel, file in enumerate(files):
            if file is None:
                continue
            name = Path(file).name
            try:
                mask, _ = read_mask(file)
            except ImageError as error:
                return problem(f"{key[:-1].replace('_', ' ')} {name}: {error}")
            if mask.shape != image.shape:
                return problem(
                    f"{key[:-1].replace('_', ' ')} {name} is {mask.shape[0]}×{mask.shape[1]}, "
                    f"but its image is {image.shape[0]}×{image.shape[1]}",
                )
            masks[channel] = fit_mask(mask, settings.size, settings.resize)
        out[key] = masks
    return out
