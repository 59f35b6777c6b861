"""PyTorch views of a prepared dataset (:mod:`sibnet.data.prepared`) for a ``DataLoader``:
images with labels for classification, images with organ masks for segmentation. Kept apart
from the format itself, which needs no PyTorch (``sibnet prepare`` never imports it).

Items are mappings of tensors (:class:`Batch`, :class:`OrganMaskBatch`); a ``DataLoader``'s
default collation stacks each key, so a batch is the same mapping with a batch dimension first.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NotRequired, TypedDict, cast

import numpy as np
import torch

from sibnet.data.prepared import PreparedDataset, PreparedError

__all__ = ["Batch", "OrganMaskBatch", "PreparedImages", "PreparedOrganMasks", "with_unlabeled"]


class Batch(TypedDict):
    """A classification batch, as training objectives and :func:`sibnet.engine.predict` take it.

    Keys (an item of :class:`PreparedImages` has the same without the batch dimension ``B``):

    * ``image``: ``(B, C_in, H, W)`` float32 in [0, 1];
    * ``target``: ``(B, C)`` float32, 0/1 (one-hot in multi-class tasks), -1 an unknown label;
    * ``lesion_masks`` (optional): ``(B, C, H, W)`` float32 0/1, each class's lesion mask;
    * ``labeled`` (optional): ``(B,)`` bool, false for an image whose targets are not labels.

    :func:`sibnet.engine.train_epoch` moves every tensor of it to the device and passes it whole
    to the objective, so an objective that needs an optional key needs no engine change, only a
    view that yields it.
    """

    image: torch.Tensor
    target: torch.Tensor
    lesion_masks: NotRequired[torch.Tensor]
    labeled: NotRequired[torch.Tensor]


class OrganMaskBatch(TypedDict):
    """A segmentation batch: ``image`` ``(B, 1, H, W)`` float32 in [0, 1], ``organ_masks``
    ``(B, K, H, W)`` float32 0/1 (an item of :class:`PreparedOrganMasks`: without ``B``)."""

    image: torch.Tensor
    organ_masks: torch.Tensor


class PreparedImages(torch.utils.data.Dataset):
    """Images and labels of one split, as tensors, for a ``DataLoader``.

    Items are :class:`Batch` mappings without the batch dimension: ``image`` ``(1, H, W)``
    float32 in [0, 1]; ``target`` ``(C,)`` float32 0/1 (one-hot in multi-class tasks), -1 an
    unknown label. A split's view holds its labeled images
    (:meth:`~sibnet.data.prepared.PreparedDataset.indices`); :meth:`unlabeled` and
    :meth:`with_withheld` are the two views of a dataset's unlabeled training images.

    Attributes:
        rows: ``(N,)`` the manifest rows, in manifest order.
        targets: ``(N, C)`` int8, each row's target (the stored labels, or withheld ones).
    """

    def __init__(
        self,
        dataset: PreparedDataset,
        split: str,
        *,
        rows: np.ndarray | None = None,
        targets: np.ndarray | None = None,
    ) -> None:
        self.dataset = dataset
        self.rows = dataset.indices(split) if rows is None else np.asarray(rows)
        self.targets = dataset.labels[self.rows] if targets is None else np.asarray(targets)
        if len(self.rows) == 0:
            raise PreparedError(f"{dataset.root}: the {split} split is empty")

    @classmethod
    def unlabeled(cls, dataset: PreparedDataset) -> PreparedImages:
        """The unlabeled training images; their ``target`` is the stored placeholder (-1
        everywhere), never a label: an objective reads the batch's ``labeled`` flags."""
        return cls(dataset, "train (unlabeled images)", rows=dataset.unlabeled_indices())

    @classmethod
    def with_withheld(cls, dataset: PreparedDataset) -> PreparedImages:
        """The training split as if every image were labeled: the labeled images and the
        unlabeled ones with the labels the dataset withheld, in manifest order (the upper
        bound of the unlabeled-images study, ``unlabeled: oracle``)."""
        withheld = dataset.withheld_indices()
        rows = np.sort(np.concatenate([dataset.indices("train"), withheld]))
        targets = dataset.labels[rows].copy()
        targets[np.searchsorted(rows, withheld)] = dataset.withheld_labels(withheld)
        return cls(dataset, "train", rows=rows, targets=targets)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> Batch:
        row = self.rows[index : index + 1]
        image = torch.from_numpy(self.dataset.images(row)[0])
        target = torch.from_numpy(self.targets[index].astype(np.float32))
        return {"image": image, "target": target}


def with_unlabeled(batch: Batch, unlabeled: Batch) -> Batch:
    """A labeled batch ``(B, ...)`` and an unlabeled one ``(U, ...)`` → one batch
    ``(B + U, ...)``, the labeled images first, with ``labeled`` ``(B + U,)`` bool (true for
    the first ``B``). Both must have the same keys (``labeled`` aside)."""
    keys = set(batch) - {"labeled"}
    if keys != set(unlabeled) - {"labeled"}:
        raise ValueError(f"batches differ in keys: {sorted(batch)} and {sorted(unlabeled)}")
    merged = {key: torch.cat([batch[key], unlabeled[key]]) for key in keys}  # type: ignore[literal-required]
    n, m = len(batch["image"]), len(unlabeled["image"])
    flags = torch.zeros(n + m, dtype=torch.bool, device=batch["image"].device)
    flags[:n] = True
    merged["labeled"] = flags
    return cast(Batch, {k: merged[k] for k in (*batch, "labeled") if k in merged})


class PreparedOrganMasks(torch.utils.data.Dataset):
    """Images and organ masks of given manifest rows, as tensors, for segmentation.

    Items are :class:`OrganMaskBatch` mappings without the batch dimension: ``image``
    ``(1, H, W)`` float32 in [0, 1]; ``organ_masks`` ``(K, H, W)`` float32 0/1, the organs
    ``organs`` (names from ``dataset.organs``) in order.
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

    def __getitem__(self, index: int) -> OrganMaskBatch:
        row = self.rows[index : index + 1]
        image = torch.from_numpy(self.dataset.images(row)[0])
        masks = self.dataset.organ_masks(row)[0][self.channels].astype(np.float32)
        return {"image": image, "organ_masks": torch.from_numpy(masks)}
