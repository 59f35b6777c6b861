"""The report's sections, registered in the order of ``summary.md``.

:data:`SECTIONS` is the one list of the report: ``sibnet report`` builds every section in it,
and ``workflow/rules/report.smk`` takes the files' names, titles and captions from it. To add a
section, write a module here that defines a :class:`~sibnet.report.section.Section` and
register it below; a module of this package that registers none fails :meth:`SECTIONS.check
<sibnet.report.section.SectionRegistry.check>` (run on import, and by every report).

Snakemake imports this list whenever it reads the workflow, so a section module imports what
only its ``build`` needs (the comparisons, SciPy, the plots, matplotlib) inside ``build``.
"""

from __future__ import annotations

from sibnet.report.section import SectionRegistry
from sibnet.report.sections import (
    clean_auc,
    noise,
    pairs,
    saliency,
    segmentation,
    training,
    training_images,
    validation,
)

__all__ = ["SECTIONS"]

SECTIONS = SectionRegistry(f"{__name__}.SECTIONS", package=__name__)
"""The report's sections, in the order of ``summary.md`` (their tables) and of its figures."""

SECTIONS.add(training_images.SECTION)
SECTIONS.add(validation.SECTION)
SECTIONS.add(clean_auc.SECTION)
SECTIONS.add(pairs.SECTION)
SECTIONS.add(noise.SECTION)
SECTIONS.add(saliency.SECTION)
SECTIONS.add(training.SECTION)
SECTIONS.add(segmentation.SECTION)
SECTIONS.check()
