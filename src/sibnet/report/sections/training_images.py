"""Report section: the training images each method learned from, where the dataset has
unlabeled ones (the unlabeled-images study). Nothing is read or written when the configured
source yields no unlabeled images (the default)."""

from __future__ import annotations

import pandas as pd

from sibnet.report.context import ReportContext
from sibnet.report.section import ReportFile, Section, SectionOutput

__all__ = ["SECTION"]

COLUMNS = (
    "method",
    "objective",
    "unlabeled",
    "training_images",
    "labeled_images",
    "unlabeled_images",
    "labeled_per_step",
    "unlabeled_per_step",
)


def build(context: ReportContext) -> SectionOutput:
    """The counts of ``dataset.json`` and, per method, what it trained on."""
    params = context.params
    if not params.prepare.section().unlabeled_images()[0]:
        return SectionOutput()
    meta = context.dataset_meta()
    unlabeled = meta.get("unlabeled", {"images": 0, "withheld_labels": 0, "origin": "none"})
    counts = meta["split_counts"]
    labeled = int(counts["train"]) - int(unlabeled["images"])
    batch = params.train.batch_size
    rows = []
    for name in params.pipeline.methods:
        method = params.method(name)
        as_labeled, as_unlabeled = method.unlabeled_added(
            int(unlabeled["images"]), int(unlabeled["withheld_labels"])
        )
        rows.append(
            {
                "method": name,
                "objective": method.objective,
                "unlabeled": method.unlabeled,
                "training_images": labeled + as_labeled + as_unlabeled,
                "labeled_images": labeled + as_labeled,
                "unlabeled_images": as_unlabeled,
                "labeled_per_step": batch,
                "unlabeled_per_step": method.unlabeled_batch_size(batch, params.train.processes),
            }
        )
    table = pd.DataFrame(rows, columns=list(COLUMNS))
    lines = [
        "## Training images",
        "",
        f"The training split holds {counts['train']} images: {labeled} labeled and "
        f"{unlabeled['images']} unlabeled ({unlabeled['origin']}; "
        f"{unlabeled['withheld_labels']} with withheld labels); validation {counts['val']}, "
        f"test {counts['test']}, "
        "all labeled. `unlabeled`: *ignore* trains on the labeled images alone, *use* adds the "
        "unlabeled ones to the label-free terms, *oracle* trains on them with their withheld "
        "labels (the upper bound).",
        "",
        "| method | objective | unlabeled | training images | labeled | unlabeled | "
        "per step (labeled + unlabeled) |",
        "|---|---|---|---|---|---|---|",
    ]
    for _, r in table.iterrows():
        lines.append(
            f"| {r['method']} | {r['objective']} | {r['unlabeled']} | {r['training_images']} | "
            f"{r['labeled_images']} | {r['unlabeled_images']} | "
            f"{r['labeled_per_step']} + {r['unlabeled_per_step']} |"
        )
    return SectionOutput(
        markdown="\n".join(lines),
        tables={"training_images.csv": table},
        metrics={
            "training_images": {
                "train_labeled": labeled,
                "train_unlabeled": int(unlabeled["images"]),
                "withheld_labels": int(unlabeled["withheld_labels"]),
                "val": int(counts["val"]),
                "test": int(counts["test"]),
                "origin": unlabeled["origin"],
            }
        },
    )


SECTION = Section(
    name="training_images",
    subcategory="Training",
    files=(
        ReportFile(
            "training_images.csv",
            "Training images per method (table)",
            """**Training images per method** (``training_images.csv``), written when the
dataset has unlabeled training images. One row per method: its ``objective`` and ``unlabeled``
setting (*ignore*, *use*, *oracle*), the ``training_images`` it learned from, of which
``labeled_images`` reached the task loss and ``unlabeled_images`` only the label-free terms,
and the images of each step (``labeled_per_step`` + ``unlabeled_per_step``).""",
        ),
    ),
    build=build,
    metrics_caption="``training_images`` (the training split's labeled and unlabeled counts, "
    "when it has unlabeled images)",
    written_when="the source yields unlabeled training images",
)
