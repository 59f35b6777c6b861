"""Extensions from outside the package, found through the ``sibnet.extensions`` entry points.

An extension is a module of another installed distribution that registers what it adds when
imported: a stage (:func:`sibnet.dag.register_stage`), an objective, a dataset source or a report
section (each with its own registry). It is declared in that distribution's ``pyproject.toml``::

    [project.entry-points."sibnet.extensions"]
    my_stage = "my_package.my_stage"

:func:`load_extensions` imports every declared module once per process. The command line
(:mod:`sibnet.cli`), the Snakefile (``workflow/rules/common.smk``) and params validation
(:func:`sibnet.config.validate_params`) call it before they read a registry, so a Snakemake rule,
a ``dvc.yaml`` stage, a subcommand and a params section exist for an extension's stage in every
process that runs the pipeline. An extension that fails to import stops the process with an
:class:`ExtensionError` naming the entry point; nothing is skipped silently.
"""

from __future__ import annotations

import sys
from importlib.metadata import entry_points
from pathlib import Path

from sibnet.errors import SibnetError

__all__ = ["GROUP", "ExtensionError", "extension_files", "load_extensions"]

GROUP = "sibnet.extensions"
"""The entry-point group that names extension modules."""

_loaded: dict[str, str] = {}
"""Entry-point name → module, of the extensions imported in this process."""


class ExtensionError(ImportError, SibnetError):
    """A declared extension could not be imported."""


def load_extensions() -> dict[str, str]:
    """Import every module of the :data:`GROUP` entry points not imported yet (idempotent).

    Returns:
        Entry-point name → module name, of every extension loaded in this process.

    Raises:
        ExtensionError: an extension's module failed to import (the message names the entry
            point, its distribution and the error), or two extensions have one name.
    """
    for point in entry_points(group=GROUP):
        if _loaded.get(point.name) == point.value:
            continue
        if point.name in _loaded:
            raise ExtensionError(
                f"two extensions are named {point.name!r} in entry-point group {GROUP!r}: "
                f"{_loaded[point.name]} and {point.value}; rename one"
            )
        try:
            point.load()
        except Exception as error:  # any failure of foreign code: name the extension at fault
            owner = point.dist.name if point.dist is not None else "an unknown distribution"
            raise ExtensionError(
                f"extension {point.name!r} ({point.value}, from {owner}, entry-point group "
                f"{GROUP!r}) failed to import: {type(error).__name__}: {error}"
            ) from error
        _loaded[point.name] = point.value
    return dict(_loaded)


def extension_files() -> list[Path]:
    """The source files of the extension modules loaded in this process (every stage depends
    on them: an extension's objective, source or section can run in any stage that validates or
    trains, and :mod:`sibnet.imports` cannot follow an entry point)."""
    files = []
    for module in _loaded.values():
        origin = getattr(sys.modules.get(module.split(":")[0]), "__file__", None)
        if origin:
            files.append(Path(origin).resolve())
    return files
