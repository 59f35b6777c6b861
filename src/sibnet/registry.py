"""Registries: the one way sibnet's extension points learn what exists.

Four things are added to sibnet by registering them under a name: pipeline stages
(:data:`sibnet.dag.STAGES`), training objectives (:mod:`sibnet.objectives.registry`), dataset
sources (:data:`sibnet.data.sources.SOURCES`) and report sections
(:data:`sibnet.report.sections.SECTIONS`). Each keeps a :class:`Registry`, a read-only mapping
in registration order: registering a name twice with another entry is an error, and looking up
a name that was never registered raises a :class:`RegistryError` that names the registry and
lists what it holds, so a forgotten registration fails loudly and nothing falls back to a
default.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from typing import Generic, TypeVar

from sibnet.errors import SibnetError

__all__ = ["Registry", "RegistryError"]

T = TypeVar("T")


class RegistryError(LookupError, SibnetError):
    """A name the registry does not hold, or one registered twice; the message names the
    registry and what it holds."""

    def __str__(self) -> str:  # LookupError would quote the message, as KeyError does
        return str(self.args[0]) if self.args else ""


class Registry(Mapping[str, T], Generic[T]):
    """Named entries in registration order (a read-only mapping; :meth:`register` adds).

    Args:
        name: how messages name the registry, e.g. ``sibnet.dag.STAGES``.
        kind: what an entry is, for messages, e.g. ``stage``.
        how: how an entry is registered, for the message of an unknown name, e.g.
            ``sibnet.dag.register_stage``.
    """

    def __init__(self, name: str, kind: str, how: str) -> None:
        self.name = name
        self.kind = kind
        self.how = how
        self._entries: dict[str, T] = {}

    def register(self, key: str, entry: T, *, before: str | None = None) -> T:
        """Add ``entry`` as ``key`` (at the end, or just before the entry ``before``) and return
        it. Registering the same entry again is a no-op.

        Raises:
            RegistryError: ``key`` is registered already with another entry, or ``before`` is
                not registered.
        """
        if key in self._entries:
            if self._entries[key] is entry:
                return entry
            raise RegistryError(
                f"{self.kind} {key!r} is registered already in {self.name} (by "
                f"{_origin(self._entries[key])}); choose another name"
            )
        if before is None:
            self._entries[key] = entry
            return entry
        if before not in self._entries:
            raise self.unknown(before)
        items = list(self._entries.items())
        items.insert(list(self._entries).index(before), (key, entry))
        self._entries = dict(items)
        return entry

    def unregister(self, key: str) -> None:
        """Remove ``key`` if registered (for tests that register entries of their own)."""
        self._entries.pop(key, None)

    @contextlib.contextmanager
    def restored(self) -> Iterator[None]:
        """Put the entries back as they are now on leaving the block (for tests that register
        or unregister entries of their own)."""
        saved = dict(self._entries)
        try:
            yield
        finally:
            self._entries = saved

    def names(self) -> list[str]:
        """The registered names, in registration order."""
        return list(self._entries)

    def unknown(self, key: object) -> RegistryError:
        """The error for a name that is not registered."""
        return RegistryError(
            f"unknown {self.kind} {key!r}: the {self.kind} registry {self.name} holds "
            f"{self.names()}; an entry is added by {self.how} when its module is imported"
        )

    def __getitem__(self, key: str) -> T:
        try:
            return self._entries[key]
        except (KeyError, TypeError):
            raise self.unknown(key) from None

    def get(self, key: str, default: T | None = None) -> T | None:  # type: ignore[override]
        return self._entries.get(key, default)

    def __contains__(self, key: object) -> bool:
        return key in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(tuple(self._entries))

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name}: {self.names()}>"


def _origin(entry: object) -> str:
    """Where an entry comes from, for messages: the module it names (``module``), its own, or
    that of its class."""
    module = getattr(entry, "module", None)
    if isinstance(module, str):
        return module
    return getattr(entry, "__module__", None) or type(entry).__module__
