"""PyTorch views of a prepared dataset (:mod:`sibnet.data.prepared`) for a ``DataLoader``:
images with labels for classification, images with organ masks for segmentation. Kept apart
from the format itself, which needs no PyTorch (``sibnet prepare`` never imports it)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from sibnet.data.prepared import PreparedDataset, PreparedError

__all__ = ["PreparedImages", "PreparedOrganMasks"]


class PreparedImages(torch.utils.data.Dataset):
    """Images and labels of one split, as tensors, for a ``DataLoader``.

    Items are ``(image, target)``: ``image`` ``(1, H, W)`` float32 in [0, 1]; ``target`` ``(C,)``
    float32 0/1 (one-hot in multi-class tasks).
    """

    def __init__(self, dataset: PreparedDataset, split: str) -> None:
        self.dataset = dataset
        self.rows = dataset.indices(split)
        if len(self.rows) == 0:
            raise PreparedError(f"{dataset.root}: the {split} split is empty")

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        row = self.rows[index : index + 1]
        image = torch.from_numpy(self.dataset.images(row)[0])
        target = torch.from_numpy(self.dataset.labels[row[0]].astype(np.float32))
        return image, target


class PreparedOrganMasks(torch.utils.data.Dataset):
    """Images and organ masks of given manifest rows, as tensors, for segmentation.

    Items are ``(image, masks)``: ``image`` ``(1, H, W)`` float32 in [0, 1]; ``masks``
    ``(K, H, W)`` float32 0/1, the organs ``organs`` (names from ``dataset.organs``) in order.
    """

    def __init__(self, dataset: PreparedDataset, rows: np.ndarray, organs: Sequence[str]) -> None:
        unknown = [o for o in organs if o not in dataset.organs]
        if unknown:
            raise PreparedError(
                f"{dataset.root}: no organ mask named {unknown}; this dataset has {dataset.organs}"
            )
        self.dataset = dataset
        self.rows = np.asarray(rows)
        self.channels = [dataset.organs.index(o) for o in organs]

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        row = self.rows[index : index + 1]
        image = torch.from_numpy(self.dataset.images(row)[0])
        masks = self.dataset.organ_masks(row)[0][self.channels].astype(np.float32)
        return image, torch.from_numpy(masks)
