"""The package's own import graph, read from the source: which modules a stage really runs.

:func:`import_closure` follows every import of a ``sibnet`` module, wherever it stands in the
file (module level, inside a function, under ``if TYPE_CHECKING``) and ``importlib``'s
``import_module("sibnet....")`` with a literal name, to the set of package modules that can
execute when the roots are imported, the ``__init__`` of every enclosing package included.
:mod:`sibnet.dag` makes each stage depend on exactly those files, so editing a module re-runs
only the stages that can run it.

An import whose name is computed at run time cannot be followed. The one allowed is the
command line's import of the stage module (:data:`DYNAMIC_IMPORTS`); the stage module is a root
of every stage's closure, so it is covered. Any other raises :class:`DynamicImportError`, which
the tests turn into a failure, so a new one cannot silently leave a module out.

Only the package is followed: third-party versions are recorded by the lineage, not here.
"""

from __future__ import annotations

import ast
import functools
from collections.abc import Iterable
from pathlib import Path

from sibnet.errors import SibnetError

__all__ = [
    "DYNAMIC_IMPORTS",
    "PACKAGE",
    "DynamicImportError",
    "import_closure",
    "imports_in_source",
    "imports_of",
    "is_module",
    "module_file",
]

PACKAGE = "sibnet"
_ROOT = Path(__file__).resolve().parent
"""The package folder, ``.../sibnet``."""

DYNAMIC_IMPORTS: dict[str, str] = {
    "sibnet.cli": "the stage module of the command (sibnet.stages.<stage>), a root of its closure",
}
"""Modules allowed a computed ``import_module`` name, and what it imports."""


class DynamicImportError(SibnetError):
    """A module imports a package module by a name computed at run time."""


def module_file(name: str) -> Path:
    """The source file of package module ``name`` (``sibnet.a.b`` → ``.../sibnet/a/b.py`` or
    ``.../sibnet/a/b/__init__.py``).

    Raises:
        KeyError: no such module in the package.
    """
    parts = name.split(".")
    if parts[0] != PACKAGE:
        raise KeyError(f"{name} is not a {PACKAGE} module")
    base = _ROOT.joinpath(*parts[1:])
    for candidate in (base / "__init__.py", base.with_suffix(".py")):
        if candidate.is_file():
            return candidate
    raise KeyError(f"no module {name} in {_ROOT}")


def is_module(name: str) -> bool:
    """Whether ``name`` is a module of the package."""
    try:
        module_file(name)
    except KeyError:
        return False
    return True


def _absolute(package: str, node: ast.ImportFrom) -> str:
    """The absolute module name of ``from <node.module> import ...`` written in a module of
    ``package`` (for a package's ``__init__``, the package itself)."""
    if not node.level:
        return node.module or ""
    base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
    return f"{base}.{node.module}" if node.module else base


def _literal_import_module(node: ast.Call) -> str | bool | None:
    """For a call ``importlib.import_module(x)`` / ``import_module(x)``: ``x`` if a string
    literal, ``False`` if computed; ``None`` for any other call."""
    function = node.func
    name = function.attr if isinstance(function, ast.Attribute) else getattr(function, "id", None)
    if name not in ("import_module", "__import__") or not node.args:
        return None
    argument = node.args[0]
    if isinstance(argument, ast.Constant) and isinstance(argument.value, str):
        return argument.value
    return False


def imports_in_source(
    text: str, module: str, *, is_package: bool = False, filename: str = "<source>"
) -> frozenset[str]:
    """Absolute names of everything the source ``text`` of ``module`` imports, anywhere in it.

    ``from a import b`` gives ``a`` and ``a.b`` (which may be a name rather than a module: the
    caller keeps the modules); relative imports are resolved against ``module`` (a package's
    ``__init__`` when ``is_package``). A literal ``importlib.import_module("...")`` counts.

    Raises:
        DynamicImportError: a computed ``import_module`` name, unless ``module`` is in
            :data:`DYNAMIC_IMPORTS`.
    """
    tree = ast.parse(text, filename=filename)
    package = module if is_package else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = _absolute(package, node)
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Call):
            target = _literal_import_module(node)
            if target is False and module not in DYNAMIC_IMPORTS:
                raise DynamicImportError(
                    f"{filename}:{node.lineno}: import_module with a computed name; the stage "
                    "dependencies (sibnet.imports) cannot follow it. Import by a literal name, "
                    "or list the module in sibnet.imports.DYNAMIC_IMPORTS with what it imports"
                )
            if isinstance(target, str):
                found.add(target)
    return frozenset(found)


@functools.cache
def imports_of(module: str) -> frozenset[str]:
    """Package modules that package module ``module`` imports anywhere in its file.

    Raises:
        DynamicImportError: see :func:`imports_in_source`.
    """
    path = module_file(module)
    text = path.read_text(encoding="utf-8")
    found = imports_in_source(
        text, module, is_package=path.name == "__init__.py", filename=str(path)
    )
    return frozenset(n for n in found if n.split(".")[0] == PACKAGE and is_module(n))


def _with_packages(name: str) -> list[str]:
    """``name`` and every package enclosing it (their ``__init__`` runs on import)."""
    parts = name.split(".")
    return [".".join(parts[: i + 1]) for i in range(len(parts))]


def import_closure(roots: Iterable[str]) -> tuple[str, ...]:
    """Every package module that importing ``roots`` can execute, sorted.

    Raises:
        KeyError: a root is not a package module.
        DynamicImportError: see :func:`imports_of`.
    """
    roots = tuple(roots)
    for root in roots:
        module_file(root)
    seen: set[str] = set()
    pending = [name for root in roots for name in _with_packages(root)]
    while pending:
        name = pending.pop()
        if name in seen:
            continue
        seen.add(name)
        for imported in imports_of(name):
            pending.extend(n for n in _with_packages(imported) if n not in seen)
    return tuple(sorted(seen))
