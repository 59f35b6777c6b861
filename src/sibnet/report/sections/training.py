"""Report section: the training curves of every run (a figure, no table)."""

from __future__ import annotations

from pathlib import Path

from sibnet.report.context import ReportContext
from sibnet.report.section import Figure, ReportFile, Section, SectionOutput

__all__ = ["SECTION"]


def build(context: ReportContext) -> SectionOutput:
    """The training-curves figure, from every run's training history."""
    histories = context.histories()
    title = f"{context.params.prepare.dataset}: training"

    def draw(path: Path) -> None:
        from sibnet.plots.report import plot_training_summary

        plot_training_summary(histories, path, title)

    caption = "Training loss and validation macro AUC per epoch."
    return SectionOutput(figures={"training_curves.png": Figure(caption, draw)})


SECTION = Section(
    name="training",
    subcategory="Training",
    files=(
        ReportFile(
            "training_curves.png",
            "Training loss and validation AUC (figure)",
            """**Training curves** (``training_curves.png``).
Training loss (left) and validation macro AUC (right) after every epoch, one colour per method
and one thin line per seed. Use it to check that every run converged and to spot the seeds whose
training diverged from the others.""",
        ),
    ),
    build=build,
)
