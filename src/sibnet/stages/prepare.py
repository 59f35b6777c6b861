"""``sibnet prepare``: a raw source → ``data/prepared/<dataset>/``.

See :mod:`sibnet.data.prepared` for the layout. ``prepare.source`` names a source of the
registry (:data:`sibnet.data.sources.SOURCES`; the built-in ones: ``phantom``, ``chexpert``,
``medmnist``, ``folder``, whose adapters :mod:`sibnet.data.adapters` registers); every source
goes the same way: its adapter's ``check``, its ``plan``, then :func:`sibnet.data.ingest.ingest`.

Problems in the raw data are collected and reported together, in row order
(:mod:`sibnet.data.problems`); the stage fails before writing anything unless ``skip_invalid``
(``--skip-invalid``), which leaves those rows out and lists them in ``rejects.csv`` inside the
prepared dataset. Before that, and before the MLflow run is opened, the adapter's ``check``
makes sure that the folders, files and columns the params name exist: one that does not is a
configuration error (:class:`~sibnet.config.ParamsError` naming the key), so a misconfigured
run leaves no failed MLflow run behind. A source with params but no registered adapter is a
:class:`~sibnet.data.sources.SourceError` naming the registry, raised then too.
"""

from __future__ import annotations

import logging
from pathlib import Path

import sibnet.data.adapters  # noqa: F401  (registers the built-in sources' adapters)
from sibnet.config import Params
from sibnet.data.ingest import ingest
from sibnet.data.prepared import PreparedDataset
from sibnet.data.sources import SOURCES
from sibnet.tracking import start_run

__all__ = ["prepare"]

log = logging.getLogger(__name__)


def prepare(params: Params, *, prepared: Path, skip_invalid: bool | None = None) -> PreparedDataset:
    """Build the prepared dataset folder ``prepared`` from ``params.prepare``.

    The folder is written beside its final place and swapped in only once complete and checked,
    so a failure leaves any earlier version untouched.

    Args:
        params: the validated params.
        prepared: the output folder.
        skip_invalid: leave rows with problems out (``None``: ``prepare.skip_invalid``).

    Raises:
        SourceError: the source has no registered adapter (before the MLflow run is opened).
        ParamsError: a folder, file or column the params name is not there (checked before
            the MLflow run is opened).
        DataError: the raw data has problems (and not ``skip_invalid``).
    """
    section = params.prepare
    skip = section.skip_invalid if skip_invalid is None else skip_invalid
    adapter = SOURCES.adapter(section.source)
    adapter.check(section)
    with start_run(params, stage="prepare") as tracker:
        tracker.log_params({"prepare": section.model_dump(mode="json"), "skip_invalid": skip})
        ingest(
            adapter.plan(section),
            Path(prepared),
            shard_size=section.shard_size,
            workers=section.workers,
            skip_invalid=skip,
        )
        dataset = PreparedDataset.open(prepared, verify=False)
        rejected = int(dataset.meta["source"].get("rejected_rows", 0))
        unlabeled = dataset.meta.get("unlabeled", {"images": 0, "withheld_labels": 0})
        log.info(
            "%s: %d images, splits %s (train: %d unlabeled), classes %s, %d row(s) rejected",
            prepared,
            len(dataset),
            dataset.meta["split_counts"],
            unlabeled["images"],
            dataset.classes,
            rejected,
        )
        tracker.log_metrics(
            {
                "num_images": len(dataset),
                "rejected_rows": rejected,
                **{f"split.{k}": v for k, v in dataset.meta["split_counts"].items()},
                **(
                    {
                        "unlabeled_images": unlabeled["images"],
                        "withheld_labels": unlabeled["withheld_labels"],
                    }
                    if unlabeled["images"]
                    else {}
                ),
            }
        )
        tracker.log_artifact(Path(prepared) / "dataset.json")
        if (Path(prepared) / "rejects.csv").is_file():
            tracker.log_artifact(Path(prepared) / "rejects.csv")
    return dataset
