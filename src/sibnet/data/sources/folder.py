"""``prepare.folder``: the params of your own data, a CSV plus image files (adapter:
:mod:`sibnet.data.adapters.folder`)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import (
    Field,
    field_validator,
    model_validator,
)

from sibnet.data.sources.registry import SourceParams, register_source
from sibnet.schema import ClassName, Name, unique

__all__ = ["FolderParams"]


class FolderParams(SourceParams):
    """The folder adapter (:mod:`sibnet.data.adapters.folder`): a CSV plus image files.

    Multi-label: one 0/1 column per class, named as the class. Multi-class: ``label_column``
    holds a class name per row. ``patient_column`` and ``split_column`` are optional.

    Masks come one of two ways per kind (a params error to set both for one kind):

    - folders: ``lesion_masks`` / ``organ_masks`` hold
      ``<image path without suffix>/<class or organ>.png``;
    - columns of the CSV: ``lesion_mask_columns`` maps a class to the column holding its mask
      path, ``organ_mask_columns`` every organ to its column; paths relative to ``root`` (as
      image paths), an empty cell an empty mask (no mask at all when the row's every mask cell
      is empty).

    ``organs`` names the organs and goes with ``organ_masks`` or ``organ_mask_columns``.

    Unlabeled training images (see :mod:`sibnet.data.prepared`), two ways, which may be combined:

    - ``unlabeled_fraction`` in [0, 1): once the splits are drawn (or read), that fraction of
      the train patients (:func:`~sibnet.data.splits.unlabeled_groups`, seeded by
      ``prepare.split.seed``) lose their labels, which are withheld;
    - ``unlabeled_csv``: a CSV (relative to ``root``, or absolute) of further images with
      ``path_column`` (and ``patient_column`` when set) and no labels: added to train,
      unlabeled, with nothing withheld.
    """

    required = ("root", "classes")
    dumped_when_set = (
        "lesion_mask_columns",
        "organ_mask_columns",
        "unlabeled_fraction",
        "unlabeled_csv",
    )

    root: str | None = None
    csv: str = "labels.csv"
    path_column: str = "path"
    task: Literal["multilabel", "multiclass"] = "multilabel"
    classes: list[ClassName] = Field(default_factory=list)
    label_column: str = "label"
    patient_column: str | None = None
    split_column: str | None = None
    lesion_masks: str | None = None
    organ_masks: str | None = None
    lesion_mask_columns: dict[ClassName, Annotated[str, Field(min_length=1)]] | None = Field(
        None, min_length=1
    )
    organ_mask_columns: dict[Name, Annotated[str, Field(min_length=1)]] | None = Field(
        None, min_length=1
    )
    organs: list[Name] = Field(default_factory=list)
    intensity: Literal["dtype", "minmax"] = "dtype"
    unlabeled_fraction: float = Field(0.0, ge=0.0, lt=1.0)
    unlabeled_csv: Annotated[str, Field(min_length=1)] | None = None

    @field_validator("classes", "organs")
    @classmethod
    def _unique_names(cls, values: list[str]) -> list[str]:
        return unique(values)

    @model_validator(mode="after")
    def _masks_one_way(self) -> FolderParams:
        for kind in ("lesion", "organ"):
            if getattr(self, f"{kind}_masks") is not None and getattr(self, f"{kind}_mask_columns"):
                raise ValueError(
                    f"{kind}_masks (a mask folder) and {kind}_mask_columns (mask paths in the "
                    f"CSV) are two ways to give the {kind} masks: set one, not both"
                )
        if self.lesion_mask_columns:
            unknown = [c for c in self.lesion_mask_columns if c not in self.classes]
            if unknown:
                raise ValueError(
                    f"lesion_mask_columns names {unknown}, which are not classes; "
                    f"accepted: {self.classes}"
                )
        given = self.organ_masks is not None or bool(self.organ_mask_columns)
        if bool(self.organs) != given:
            raise ValueError(
                "organs and organ_masks go together: set both or neither (or organs and "
                "organ_mask_columns)"
            )
        if self.organ_mask_columns:
            missing = [o for o in self.organs if o not in self.organ_mask_columns]
            unknown = [o for o in self.organ_mask_columns if o not in self.organs]
            if missing or unknown:
                raise ValueError(
                    "organ_mask_columns must map every organ of organs to a column: "
                    f"missing {missing}, unknown {unknown}; accepted keys: {self.organs}"
                )
        return self

    def provided_organs(self) -> list[str]:
        """``organs``."""
        return list(self.organs)

    def unlabeled_images(self) -> tuple[bool, bool]:
        """Unlabeled images when ``unlabeled_fraction`` > 0 or ``unlabeled_csv`` is set; all
        with withheld labels only without ``unlabeled_csv`` (its images come unlabeled)."""
        fraction, csv = self.unlabeled_fraction > 0, self.unlabeled_csv is not None
        return fraction or csv, (fraction or csv) and not csv


register_source("folder", FolderParams)
