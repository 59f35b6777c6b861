"""``sibnet prepare``: a raw source → ``data/prepared/<dataset>/``.

See :mod:`sibnet.data.prepared` for the layout.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from sibnet.config import Params, PrepareParams
from sibnet.data.adapters.phantom import write_phantom
from sibnet.data.prepared import PreparedDataset
from sibnet.files import atomic_dir
from sibnet.tracking import start_run

__all__ = ["ADAPTERS", "prepare"]

ADAPTERS: dict[str, Callable[[PrepareParams, Path], None]] = {"phantom": write_phantom}
"""Source name (``prepare.source``) → adapter writing the prepared layout into a folder."""

log = logging.getLogger(__name__)


def prepare(params: Params, *, prepared: Path) -> PreparedDataset:
    """Build the prepared dataset folder ``prepared`` from ``params.prepare``.

    The folder is written beside its final place and swapped in only once complete and checked,
    so a failure leaves any earlier version untouched.
    """
    section = params.prepare
    adapter = ADAPTERS[section.source]
    with start_run(params, stage="prepare") as tracker:
        tracker.log_params({"prepare": section.model_dump(mode="json")})
        with atomic_dir(prepared) as tmp:
            adapter(section, tmp)
            PreparedDataset.open(tmp, verify=True)
        dataset = PreparedDataset.open(prepared, verify=False)
        log.info(
            "%s: %d images, splits %s, classes %s",
            prepared,
            len(dataset),
            dataset.meta["split_counts"],
            dataset.classes,
        )
        tracker.log_metrics(
            {
                "num_images": len(dataset),
                **{f"split.{k}": v for k, v in dataset.meta["split_counts"].items()},
            }
        )
        tracker.log_artifact(Path(prepared) / "dataset.json")
    return dataset
