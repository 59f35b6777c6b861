"""What a report section is, what it returns, and the registry that lists the report's sections.

A :class:`Section` is one part of ``sibnet report``: it reads its stages' outputs through a
:class:`~sibnet.report.context.ReportContext` and returns a :class:`SectionOutput` — its tables
(written as CSV to ``results/report/``), its figures (drawn there, captioned in ``summary.md``),
its Markdown block of ``summary.md``, its entries of ``results/metrics.json``, its ``dvc plots``
data, and why it did not run (``None`` when it did). Its :class:`ReportFile` entries name every
file it may write in ``results/report/``, with the title and caption that ``snakemake --report``
shows for it.

A :class:`SectionRegistry` holds the sections in report order. :meth:`SectionRegistry.check`
fails, naming the registry, when a module of the sections package registers no section, so a
section that was written but never registered cannot be left out of the report silently.
"""

from __future__ import annotations

import pkgutil
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sibnet.errors import SibnetError
from sibnet.registry import Registry

if TYPE_CHECKING:
    import pandas as pd

    from sibnet.report.context import ReportContext

__all__ = ["Figure", "ReportError", "ReportFile", "Section", "SectionOutput", "SectionRegistry"]


class ReportError(ValueError, SibnetError):
    """A run's output that the report needs is missing or inconsistent with the others, or a
    section is not what the report expects of it."""


@dataclass(frozen=True)
class ReportFile:
    """A file of ``results/report/`` and how ``snakemake --report`` presents it.

    Args:
        name: the file name, e.g. ``clean_auc.csv``; its stem is unique in the report (the
            ``{name}`` wildcard of the Snakemake report patterns is the stem).
        title: the label of the file in the HTML report, unique in the report.
        caption: reStructuredText caption; ``{reference}`` and ``{confidence}`` (a percentage,
            e.g. ``95``) are filled in from params (write a literal brace doubled).
    """

    name: str
    title: str
    caption: str

    @property
    def stem(self) -> str:
        return Path(self.name).stem

    def caption_for(self, reference: str, confidence: float) -> str:
        """The caption with ``reference`` and ``confidence`` (a fraction, e.g. 0.95) filled in."""
        return self.caption.format(reference=reference, confidence=f"{100 * confidence:g}")


@dataclass(frozen=True)
class Figure:
    """A figure of a section: its caption in ``summary.md`` and the function that draws it to a
    path (called with ``results/report/<name>`` while the report folder is written)."""

    caption: str
    draw: Callable[[Path], None]


@dataclass
class SectionOutput:
    """What a section contributes to the report.

    Attributes:
        markdown: its block of ``summary.md`` (starting with its ``##`` heading, no trailing
            newline), or ``None`` for none.
        tables: file name → table, written as CSV (6 decimals) to ``results/report/``.
        figures: file name → :class:`Figure`, drawn to ``results/report/`` and listed with its
            caption under *Figures* in ``summary.md``, in section order.
        metrics: top-level entries of ``results/metrics.json``.
        plot_data: output name of the report stage (``noise_plot``, ``saliency_plot``) → table,
            written as CSV (6 decimals) for ``dvc plots``.
        not_run: why the section's stage had nothing to do (``metrics.json``'s ``not_run``
            maps the section's name to it), or ``None`` when it ran.
    """

    markdown: str | None = None
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)
    figures: dict[str, Figure] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    plot_data: dict[str, pd.DataFrame] = field(default_factory=dict)
    not_run: str | None = None


@dataclass(frozen=True)
class Section:
    """One part of the report.

    Args:
        name: unique; the key of ``metrics.json``'s ``not_run`` when the section did not run.
        subcategory: the group of its files in ``snakemake --report``'s *Results*.
        files: every file it may write in ``results/report/``; writing another is an error.
        build: reads the section's inputs through the context and returns its output.
        metrics_caption: reStructuredText naming its ``metrics.json`` entries, for the caption of
            ``metrics.json`` (``""`` when it has none).
        written_when: for a section that writes its files only under some params, when
            (e.g. ``"report.pairs lists pairs"``); ``""``: always.
    """

    name: str
    subcategory: str
    files: tuple[ReportFile, ...]
    build: Callable[[ReportContext], SectionOutput]
    metrics_caption: str = ""
    written_when: str = ""

    @property
    def module(self) -> str:
        """The module that defines the section (that of its ``build``)."""
        return self.build.__module__

    def check_output(self, output: SectionOutput) -> None:
        """Refuse files the section does not declare in :attr:`files`."""
        declared = {f.name for f in self.files}
        for name in [*output.tables, *output.figures]:
            if name not in declared:
                raise ReportError(
                    f"report section {self.name!r} ({self.module}) writes {name!r}, which is not "
                    f"among its files {sorted(declared)}: add a ReportFile for it"
                )


class SectionRegistry(Registry[Section]):
    """The report's sections by name, in the order of ``summary.md``.

    Args:
        name: how errors name the registry, e.g. ``sibnet.report.sections.SECTIONS``.
        package: the package whose every module must register a section (:meth:`check`).
    """

    def __init__(self, name: str, package: str) -> None:
        super().__init__(name, "report section", f"{name}.add")
        self.package = package

    def add(self, section: Section) -> Section:
        """Append ``section`` (returned, so it can be kept in a module constant).

        Raises:
            ReportError: its name, a file name or stem, or a title is taken already.
        """
        if section.name in self:
            raise ReportError(
                f"{self.name}: a section named {section.name!r} is registered already "
                f"(by {self[section.name].module}); {section.module} needs another name"
            )
        taken = {f.stem for f in self.files()}
        titles = {f.title for f in self.files()}
        for file in section.files:
            if file.stem in taken or file.title in titles:
                raise ReportError(
                    f"{self.name}: {section.module} declares {file.name!r} ({file.title!r}), "
                    "whose stem or title another section has already; stems and titles are "
                    "unique in the report"
                )
        return self.register(section.name, section)

    def files(self) -> tuple[ReportFile, ...]:
        """Every section's files, in section order."""
        return tuple(f for s in self.values() for f in s.files)

    def check(self, modules: Iterable[str] | None = None) -> None:
        """Fail if a module of :attr:`package` registers no section.

        Args:
            modules: the module names to check; default: every module of :attr:`package`.

        Raises:
            ReportError: names the registry and the modules left out.
        """
        if modules is None:
            modules = _package_modules(self.package)
        registered = {s.module for s in self.values()}
        missing = sorted(set(modules) - registered)
        if missing:
            raise ReportError(
                f"{', '.join(missing)} registers no section in {self.name}: register its "
                f"Section in {self.package} (a section module that is not registered is left "
                "out of the report)"
            )


def _package_modules(package: str) -> list[str]:
    """The names of the modules in the imported ``package`` (sub-packages included)."""
    paths = sys.modules[package].__path__
    return [f"{package}.{info.name}" for info in pkgutil.iter_modules(paths)]
