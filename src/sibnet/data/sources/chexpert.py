"""``prepare.chexpert``: the CheXpert source's params (its adapter:
:mod:`sibnet.data.adapters.chexpert`)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from sibnet.data.sources.registry import SourceParams, register_source
from sibnet.schema import ClassName, unique

__all__ = ["CHEXPERT_COMPETITION", "CHEXPERT_OBSERVATIONS", "ChexpertParams"]

CHEXPERT_OBSERVATIONS = (
    "No Finding",
    "Enlarged Cardiomediastinum",
    "Cardiomegaly",
    "Lung Opacity",
    "Lung Lesion",
    "Edema",
    "Consolidation",
    "Pneumonia",
    "Atelectasis",
    "Pneumothorax",
    "Pleural Effusion",
    "Pleural Other",
    "Fracture",
    "Support Devices",
)
"""The 14 observation columns of CheXpert's ``train.csv`` and ``valid.csv``."""

CHEXPERT_COMPETITION = ("Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Pleural Effusion")
"""The five competition labels (the paper's setting), the default classes."""


class ChexpertParams(SourceParams):
    """The CheXpert adapter (:mod:`sibnet.data.adapters.chexpert`).

    ``root`` is the folder the CSVs' ``Path`` entries are relative to (the parent of
    ``CheXpert-v1.0/``); ``train_csv`` and ``valid_csv`` are relative to it. Relative ``root``
    and mask folders are relative to the working directory (the repository root).

    ``unlabeled_fraction`` in [0, 1): once train and val are drawn, that fraction of the train
    patients (:func:`~sibnet.data.splits.unlabeled_groups`, seeded by ``prepare.split.seed``)
    lose their labels, which are withheld (unlabeled training images, see
    :mod:`sibnet.data.prepared`).
    """

    required = ("root",)
    dumped_when_set = ("unlabeled_fraction",)

    root: str | None = None
    train_csv: str = "CheXpert-v1.0/train.csv"
    valid_csv: str = "CheXpert-v1.0/valid.csv"
    classes: list[ClassName] = Field(
        default_factory=lambda: list(CHEXPERT_COMPETITION), min_length=1
    )
    uncertainty: Literal["ones", "zeros", "ignore"] = "ones"
    frontal_only: bool = True
    lesion_masks: str | None = None
    unlabeled_fraction: float = Field(0.0, ge=0.0, lt=1.0)

    def unlabeled_images(self) -> tuple[bool, bool]:
        """``unlabeled_fraction`` > 0; their labels are withheld."""
        return (True, True) if self.unlabeled_fraction > 0 else (False, False)

    @field_validator("classes")
    @classmethod
    def _known_observations(cls, classes: list[str]) -> list[str]:
        unknown = [c for c in classes if c not in CHEXPERT_OBSERVATIONS]
        if unknown:
            raise ValueError(
                f"unknown CheXpert observation(s) {unknown}; "
                f"accepted: {list(CHEXPERT_OBSERVATIONS)}"
            )
        return unique(classes)


register_source("chexpert", ChexpertParams)
