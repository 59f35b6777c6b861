"""``prepare.phantom``: the built-in phantom's params (the generator is
:mod:`sibnet.data.phantom_images`, the adapter :mod:`sibnet.data.adapters.phantom`)."""

from __future__ import annotations

from typing import Literal

from pydantic import (
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

from sibnet.data.phantom_images import (
    DEFAULT_LESION_CONTRAST,
    DEFAULT_NOISE_STD,
    FINDINGS,
    ORGANS,
)
from sibnet.data.sources.registry import SourceParams, register_source
from sibnet.schema import Section

__all__ = ["PhantomParams"]


class PhantomParams(SourceParams):
    """Options of the built-in phantom dataset (see
    :func:`sibnet.data.phantom_images.make_phantom`).

    The phantom brings its own image size (``size``; ``prepare.size`` and ``prepare.resize``
    do not apply), its task (``mode``) and organ masks (:data:`~sibnet.data.phantom_images.ORGANS`).

    ``unlabeled_images`` adds that many unlabeled training images to the ``n_images`` (see
    :func:`sibnet.data.adapters.phantom.plan_phantom`): drawn from image indices of their own,
    so that the ``n_images`` images, their splits and their bytes are those without them; their
    labels are withheld (:mod:`sibnet.data.prepared`). In Python it is :attr:`n_unlabeled`
    (the key's name is taken by :meth:`SourceParams.unlabeled_images
    <sibnet.data.sources.registry.SourceParams.unlabeled_images>`).
    """

    model_config = ConfigDict(**Section.model_config, serialize_by_alias=True)

    task_key = "mode"
    dumped_when_set = ("unlabeled_images",)

    n_images: int = Field(2400, ge=10, le=1_000_000)
    size: int = Field(128, ge=32, le=1024)
    seed: int = Field(0, ge=0)
    mode: Literal["multiclass", "multilabel"] = "multiclass"
    findings: list[str] = Field(
        default_factory=lambda: ["nodule", "effusion", "cardiomegaly", "consolidation"],
        min_length=1,
    )
    prevalence: float = Field(0.3, gt=0.0, lt=1.0)
    lesion_contrast: float = Field(DEFAULT_LESION_CONTRAST, ge=0.0)
    noise_std: float = Field(DEFAULT_NOISE_STD, ge=0.0)
    shortcut_class: str | None = None
    shortcut_rate: float = Field(0.9, ge=0.0, le=1.0)
    sites: Literal["anywhere", "typical"] = "anywhere"
    """Where nodules and consolidation sit: anywhere in the lungs, or at a class-typical site
    (see :func:`sibnet.data.phantom_images.make_phantom`)."""
    n_unlabeled: int = Field(0, ge=0, le=1_000_000, alias="unlabeled_images")
    """``unlabeled_images``: extra unlabeled training images (labels withheld)."""

    @field_validator("findings")
    @classmethod
    def _known_findings(cls, findings: list[str]) -> list[str]:
        unknown = [f for f in findings if f not in FINDINGS]
        if unknown:
            raise ValueError(f"unknown finding(s) {unknown}; accepted: {list(FINDINGS)}")
        if len(set(findings)) != len(findings):
            raise ValueError(f"findings must not repeat, got {findings}")
        return findings

    @model_validator(mode="after")
    def _shortcut_is_a_class(self) -> PhantomParams:
        if self.shortcut_class is not None and self.shortcut_class not in self.classes():
            raise ValueError(
                f"prepare.phantom.shortcut_class = {self.shortcut_class!r} is not a class "
                f"of this dataset; accepted: {self.classes()} or null"
            )
        return self

    def classes(self) -> list[str]:
        """The class names: ``normal`` first in multi-class mode, then the findings."""
        return (["normal"] if self.mode == "multiclass" else []) + list(self.findings)

    def provided_organs(self) -> list[str]:
        """The phantom's organ masks, :data:`~sibnet.data.phantom_images.ORGANS`."""
        return list(ORGANS)

    def known_task(self) -> Literal["multiclass", "multilabel"]:
        """``mode``."""
        return self.mode

    def unlabeled_images(self) -> tuple[bool, bool]:
        """``unlabeled_images`` > 0; their labels are always withheld."""
        return (True, True) if self.n_unlabeled else (False, False)


register_source("phantom", PhantomParams)
