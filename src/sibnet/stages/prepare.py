"""``sibnet prepare``: a raw source → ``data/prepared/<dataset>/``.

See :mod:`sibnet.data.prepared` for the layout. Sources (``prepare.source``):

- ``phantom``: the built-in generator (:mod:`sibnet.data.adapters.phantom`).
- ``chexpert`` and ``folder``: label tables + image files, planned by their adapter
  (:mod:`sibnet.data.adapters.chexpert`, :mod:`sibnet.data.adapters.folder`) and decoded in
  parallel, resumably, shard by shard (:mod:`sibnet.data.ingest`).
- ``medmnist``: one ``.npz`` file, streamed (:mod:`sibnet.data.adapters.medmnist`).

Problems in the raw data are collected and reported together, in row order
(:mod:`sibnet.data.problems`); the stage fails before writing anything unless ``skip_invalid``
(``--skip-invalid``), which leaves those rows out and lists them in ``rejects.csv`` inside the
prepared dataset. Before that, and before the MLflow run is opened, the source's check
(:data:`CHECKS`) makes sure that the folders, files and columns the params name exist: one
that does not is a configuration error (:class:`~sibnet.config.ParamsError` naming the key),
so a misconfigured run leaves no failed MLflow run behind.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from sibnet.config import Params, PrepareParams
from sibnet.data.adapters.chexpert import check_chexpert, plan_chexpert
from sibnet.data.adapters.folder import check_folder, plan_folder
from sibnet.data.adapters.medmnist import check_medmnist, write_medmnist
from sibnet.data.adapters.phantom import write_phantom
from sibnet.data.decode import ImageSettings
from sibnet.data.ingest import Plan, ingest
from sibnet.data.prepared import PreparedDataset
from sibnet.files import atomic_dir
from sibnet.tracking import start_run

__all__ = ["CHECKS", "PLANNERS", "prepare"]

PLANNERS: dict[str, Callable[[PrepareParams], Plan]] = {
    "chexpert": plan_chexpert,
    "folder": plan_folder,
}
"""File-based sources: ``prepare.source`` → the adapter that plans their images."""

CHECKS: dict[str, Callable[[PrepareParams], None]] = {
    "chexpert": check_chexpert,
    "folder": check_folder,
    "medmnist": check_medmnist,
}
"""``prepare.source`` → the check that what its params name exists (raises ``ParamsError``)."""

log = logging.getLogger(__name__)


def _write(section: PrepareParams, prepared: Path, skip_invalid: bool) -> None:
    """Write the prepared dataset of ``section.source`` to ``prepared``, atomically."""
    if section.source in PLANNERS:
        intensity = section.folder.intensity if section.source == "folder" else "dtype"
        ingest(
            PLANNERS[section.source](section),
            prepared,
            settings=ImageSettings((section.size, section.size), section.resize, intensity),
            shard_size=section.shard_size,
            workers=section.workers,
            skip_invalid=skip_invalid,
        )
        return
    with atomic_dir(prepared) as tmp:
        if section.source == "medmnist":
            write_medmnist(section, tmp, skip_invalid=skip_invalid)
        else:
            write_phantom(section, tmp)
        PreparedDataset.open(tmp, verify=True)


def prepare(params: Params, *, prepared: Path, skip_invalid: bool | None = None) -> PreparedDataset:
    """Build the prepared dataset folder ``prepared`` from ``params.prepare``.

    The folder is written beside its final place and swapped in only once complete and checked,
    so a failure leaves any earlier version untouched.

    Args:
        params: the validated params.
        prepared: the output folder.
        skip_invalid: leave rows with problems out (``None``: ``prepare.skip_invalid``).

    Raises:
        ParamsError: a folder, file or column the params name is not there (checked before
            the MLflow run is opened).
        DataError: the raw data has problems (and not ``skip_invalid``).
    """
    section = params.prepare
    skip = section.skip_invalid if skip_invalid is None else skip_invalid
    if section.source in CHECKS:
        CHECKS[section.source](section)
    with start_run(params, stage="prepare") as tracker:
        tracker.log_params({"prepare": section.model_dump(mode="json"), "skip_invalid": skip})
        _write(section, Path(prepared), skip)
        dataset = PreparedDataset.open(prepared, verify=False)
        rejected = int(dataset.meta["source"].get("rejected_rows", 0))
        log.info(
            "%s: %d images, splits %s, classes %s, %d row(s) rejected",
            prepared,
            len(dataset),
            dataset.meta["split_counts"],
            dataset.classes,
            rejected,
        )
        tracker.log_metrics(
            {
                "num_images": len(dataset),
                "rejected_rows": rejected,
                **{f"split.{k}": v for k, v in dataset.meta["split_counts"].items()},
            }
        )
        tracker.log_artifact(Path(prepared) / "dataset.json")
        if (Path(prepared) / "rejects.csv").is_file():
            tracker.log_artifact(Path(prepared) / "rejects.csv")
    return dataset
