"""The source registry: ``prepare.source`` → the source's params class and its adapter.

A *source* is one kind of raw dataset (the built-in phantom, CheXpert, MedMNIST, a folder of
your own). It has two halves, registered under its name in :data:`SOURCES`:

- its **params class**, a :class:`SourceParams`: the ``prepare.<source>`` section of
  ``params.yaml``, with its defaults and checks, and what the rest of the params must know
  before any data is read (the keys it needs, its organ masks, its task when known). Every
  stage validates the whole params file, so this half lives in a light module (pydantic only)
  under :mod:`sibnet.data.sources` and is registered by :func:`register_source`.
- its **adapter**, an :class:`Adapter`: ``check`` (what the params name exists) and ``plan``
  (the records that :func:`sibnet.data.ingest.ingest` turns into a prepared dataset). Only the
  prepare stage runs it: it lives under :mod:`sibnet.data.adapters` and is registered by
  :func:`register_adapter`, which also registers the params class of a source registered no
  other way (a source kept in one module of its own, outside the package).

Every registered source's section is validated (with its defaults) and dumped, in
registration order, whichever source is selected. Looking up a name the registry does not
hold, or a source whose adapter was never registered, raises :class:`SourceError` naming the
registry and the sources it knows: nothing falls back to another source.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import SerializerFunctionWrapHandler, model_serializer

from sibnet.registry import Registry, RegistryError
from sibnet.schema import Section

if TYPE_CHECKING:
    from sibnet.config import PrepareParams
    from sibnet.data.plan import Plan

__all__ = [
    "SOURCES",
    "Adapter",
    "SourceError",
    "SourceParams",
    "SourceRegistry",
    "register_adapter",
    "register_source",
]


class SourceParams(Section):
    """Base of a source's section, ``prepare.<source>``.

    Contract: every key has a default (the section of every registered source is validated and
    dumped, selected or not); checks of the section alone are pydantic validators; what the
    rest of the params need from the source is one of the methods below (named so that no
    section key shadows them: a section may well have keys ``task`` or ``organs``).
    """

    required: ClassVar[tuple[str, ...]] = ()
    """Keys that must be set (not empty) when this is the selected source."""

    task_key: ClassVar[str | None] = None
    """The key of this section that sets :meth:`known_task`, for messages (``None``: none)."""

    dumped_when_set: ClassVar[tuple[str, ...]] = ()
    """Keys left out of the dump while at their default (keys added after datasets were
    prepared with the source: params that do not use them dump, and so hash, as before)."""

    @model_serializer(mode="wrap")
    def _dump(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        """The dump without the :attr:`dumped_when_set` keys that hold their default."""
        data = handler(self)
        for name, field in type(self).model_fields.items():
            listed = name in self.dumped_when_set or field.alias in self.dumped_when_set
            if listed and getattr(self, name) == field.get_default(call_default_factory=True):
                data.pop(name, None)
                data.pop(field.alias or name, None)
        return data

    def missing(self) -> list[str]:
        """The :attr:`required` keys left unset."""
        return [key for key in self.required if not getattr(self, key)]

    def provided_organs(self) -> list[str]:
        """Organ (segmentation) masks this source provides."""
        return []

    def known_task(self) -> Literal["multiclass", "multilabel"] | None:
        """The task when it is known before preparing (``None``: the data decides)."""
        return None

    def unlabeled_images(self) -> tuple[bool, bool]:
        """``(yields, all_withheld)``: whether this section asks for unlabeled training images
        (see :mod:`sibnet.data.prepared`), and whether every one of them has withheld labels
        (the all-labeled upper bound can then be trained). Default ``(False, False)``: none."""
        return False, False


def _nothing_to_check(prepare: PrepareParams) -> None:
    """The default check: the params name no file or folder."""


@dataclass(frozen=True)
class Adapter:
    """What the prepare stage runs for a source.

    ``check`` runs first, before the MLflow run opens: it raises
    :class:`~sibnet.config.ParamsError` naming the key when a folder, file or column the
    params name is not there. ``plan`` then reads the source's tables (no image is decoded)
    into a :class:`~sibnet.data.plan.Plan`, which :func:`sibnet.data.ingest.ingest` writes.
    Both receive the whole ``prepare`` section (``dataset``, ``size``, ``split``, ... and the
    source's own section, ``prepare.section()``).

    Attributes:
        params: the params class of ``prepare.<source>``.
        plan: ``plan(prepare) -> Plan``: the dataset's records, problems and description.
        check: ``check(prepare)``: raise ``ParamsError`` if something the params name is not
            there (default: nothing to check).
    """

    params: type[SourceParams]
    plan: Callable[[PrepareParams], Plan]
    check: Callable[[PrepareParams], None] = _nothing_to_check


class SourceError(RegistryError):
    """A source the registry does not hold, or holds only half of; the message lists the known."""


@dataclass
class _Entry:
    params: type[SourceParams]
    adapter: Adapter | None = None


class SourceRegistry(Registry[_Entry]):
    """Sources by name (``prepare.source``), in registration order."""

    def __init__(self) -> None:
        super().__init__(
            "sibnet.data.sources.SOURCES", "source", "sibnet.data.sources.register_adapter"
        )

    def params(self, source: str) -> type[SourceParams]:
        """The params class of ``source``; :class:`SourceError` when it is not registered."""
        return self[source].params

    def adapter(self, source: str) -> Adapter:
        """The adapter of ``source``; :class:`SourceError` when it is not registered."""
        entry = self[source]
        if entry.adapter is None:
            with_adapters = [n for n, e in self.items() if e.adapter is not None]
            raise SourceError(
                f"source {source!r} has params ({entry.params.__name__}) but no adapter in the "
                f"source registry ({self.name}): its adapter module must call "
                f"register_adapter({source!r}, ...) and be imported (by sibnet.data.adapters "
                f"for a built-in source); sources with adapters: {with_adapters}"
            )
        return entry.adapter

    def unknown(self, key: object) -> SourceError:
        return SourceError(str(super().unknown(key)))

    def register_source(self, source: str, params: type[SourceParams]) -> None:
        """Register ``params`` as the section ``prepare.<source>``."""
        if not (isinstance(params, type) and issubclass(params, SourceParams)):
            raise TypeError(f"source {source!r}: params must be a SourceParams subclass")
        if not source.isidentifier() or source in _RESERVED:
            raise ValueError(
                f"source name {source!r} must be an identifier and not one of {sorted(_RESERVED)}"
            )
        entry = self.get(source)
        if entry is not None and entry.params is not params:
            raise SourceError(
                f"source {source!r} is already registered in {self.name} with params "
                f"{entry.params.__name__}"
            )
        if entry is None:
            self.register(source, _Entry(params))

    def register_adapter(self, source: str, adapter: Adapter) -> None:
        """Register ``adapter`` for ``source`` (and its params class, if not yet registered)."""
        if not isinstance(adapter, Adapter):
            raise TypeError(
                f"source {source!r}: register an Adapter(params, plan, check), got {adapter!r}"
            )
        self.register_source(source, adapter.params)
        self[source].adapter = adapter


_RESERVED = frozenset(
    ("dataset", "source", "size", "resize", "workers", "skip_invalid", "split", "shard_size")
)
"""Keys of ``prepare`` itself, which no source's section may take."""

SOURCES = SourceRegistry()
"""The registry: every built-in source (:mod:`sibnet.data.sources`) and any registered since."""

register_source: Callable[[str, type[SourceParams]], None] = SOURCES.register_source
register_adapter: Callable[[str, Adapter], None] = SOURCES.register_adapter
