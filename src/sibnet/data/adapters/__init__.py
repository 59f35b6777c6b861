"""Adapters: each turns one kind of source into a :class:`~sibnet.data.plan.Plan`, which
:func:`sibnet.data.ingest.ingest` writes in the prepared layout (:mod:`sibnet.data.prepared`).

Importing this package registers the built-in sources' adapters in the source registry
(:data:`sibnet.data.sources.SOURCES`); their params live in :mod:`sibnet.data.sources`. Each
adapter module defines an :class:`~sibnet.data.sources.Adapter` (``params``, ``check``,
``plan``) and calls :func:`~sibnet.data.sources.register_adapter` on import. A built-in
source's adapter is imported here; a source of your own registers from its own module.
"""

from sibnet.data.adapters import chexpert as chexpert
from sibnet.data.adapters import folder as folder
from sibnet.data.adapters import medmnist as medmnist
from sibnet.data.adapters import phantom as phantom
