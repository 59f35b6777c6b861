"""``prepare.medmnist``: the MedMNIST source's params (its adapter:
:mod:`sibnet.data.adapters.medmnist`)."""

from __future__ import annotations

from typing import Literal

from pydantic import field_validator

from sibnet.data.sources.registry import SourceParams, register_source
from sibnet.schema import ClassName, unique

__all__ = ["MedmnistParams"]


class MedmnistParams(SourceParams):
    """The MedMNIST adapter (:mod:`sibnet.data.adapters.medmnist`): one 2D ``.npz`` file.

    ``task: auto`` reads it from the labels: one column → multi-class (binary datasets are
    two-class multi-class), several 0/1 columns → multi-label. ``classes`` names the classes
    (``null``: ``class_0``, ``class_1``, ...).
    """

    required = ("path",)

    path: str | None = None
    task: Literal["auto", "multiclass", "multilabel"] = "auto"
    classes: list[ClassName] | None = None

    @field_validator("classes")
    @classmethod
    def _unique_classes(cls, classes: list[str] | None) -> list[str] | None:
        return None if classes is None else unique(classes)


register_source("medmnist", MedmnistParams)
