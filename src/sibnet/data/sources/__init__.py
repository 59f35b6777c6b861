"""Dataset sources: the registry (:mod:`sibnet.data.sources.registry`) and the built-in
sources' params, one module each.

Importing this package registers the built-in sources' params (light: pydantic only, so that
every stage can validate ``params.yaml``); their adapters register on import of
:mod:`sibnet.data.adapters`, which the prepare stage does. Registration order is the order of
the sections in every dump of the params (and so in their hashes): phantom, chexpert,
medmnist, folder.

Adding a built-in source ``<name>``: its params in ``sources/<name>.py`` (a
:class:`SourceParams` subclass, ``register_source("<name>", ...)``), imported below; its
adapter in ``adapters/<name>.py`` (``register_adapter("<name>", ...)``), imported by
:mod:`sibnet.data.adapters`; append the imports, since registration order is dump order. A
source outside the package is one module that defines both and calls
:func:`register_adapter`, declared as a ``sibnet.extensions`` entry point
(:mod:`sibnet.extensions`) so that every process imports it before validating the params.
"""

# isort: off
# Registration order = dump order; keep it.
from sibnet.data.sources import phantom as phantom
from sibnet.data.sources import chexpert as chexpert
from sibnet.data.sources import medmnist as medmnist
from sibnet.data.sources import folder as folder

# isort: on
from sibnet.data.sources.registry import (
    SOURCES,
    Adapter,
    SourceError,
    SourceParams,
    register_adapter,
    register_source,
)

__all__ = [
    "BUILT_IN_SOURCES",
    "DEFAULT_SOURCE",
    "SOURCES",
    "Adapter",
    "SourceError",
    "SourceParams",
    "register_adapter",
    "register_source",
]

DEFAULT_SOURCE = "phantom"
"""``prepare.source`` when the params do not set it: the built-in phantom."""

BUILT_IN_SOURCES = tuple(SOURCES.names())
"""The sources registered by this package, in registration order. Their sections are in every
dump of the params; another source's only when it is the selected one (so installing an
extension that registers a source changes no run's params, hashes or rerun decisions)."""
