"""Building blocks of the params schema, shared by :mod:`sibnet.config` and the params classes
that objectives, dataset sources and stages bring (which :mod:`sibnet.config` imports, so they
cannot import it back): the base of every section and the name types."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["ClassName", "Name", "Section", "unique"]

Name = Annotated[str, Field(pattern=r"^[A-Za-z][A-Za-z0-9_]*$", max_length=64)]
"""Names used in paths and stage names: a letter, then letters, digits or underscores."""

ClassName = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[^/\\\x00]+$")]
"""A class name: also a mask file name (``<class>.png``), so no slashes."""


def unique(values: list[Any]) -> list[Any]:
    """``values`` unchanged; a ``ValueError`` when an entry repeats."""
    if len(set(values)) != len(values):
        raise ValueError(f"entries must not repeat, got {values}")
    return values


class Section(BaseModel):
    """Base of every params section: unknown keys are errors, values are never coerced."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)
