"""What an adapter hands to :func:`sibnet.data.ingest.ingest`: a :class:`Plan` of the dataset.

A plan describes the dataset (name, task, classes, organs, where it came from), its rows and
the problems found while reading the source's tables. Its rows come one of two ways:

- **files** (CheXpert, your own folder): :attr:`Plan.records`, one :class:`Record` per image
  naming its image and mask files, decoded by ingest in worker processes with
  :attr:`Plan.settings`, resumably;
- **arrays** (the phantom's generator, a MedMNIST ``.npz``): :attr:`Plan.batches`, a function
  that yields the images already in memory, :class:`Batch` by batch, streamed into the dataset
  so that memory holds one batch and one shard.

Kept light (no numpy at run time) so that the source registry can name it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NotRequired, TypedDict

from sibnet.data.problems import Problem

if TYPE_CHECKING:
    import numpy as np

__all__ = ["Batch", "ImageSettings", "Plan", "Record"]


@dataclass(frozen=True)
class Record:
    """One planned image file.

    Attributes:
        table: the label table the row came from (for problem reports), e.g. ``train.csv``.
        row: 1-based data row in ``table``.
        id: unique image id (kept in the manifest).
        split: ``train``, ``val`` or ``test``.
        patient_id: the patient (splits never divide one).
        labels: one value per class: 1, 0 or -1 (unknown).
        source: the image path relative to the data root, POSIX form (kept in the manifest).
        path: the image file to read (absolute; not kept in any output).
        lesion_masks: one mask file per class (``None``: that class's mask is empty), or
            ``None`` when the image has no lesion annotation.
        organ_masks: one mask file per organ, or ``None`` when not annotated.
        labeled: false for an unlabeled image (split ``train``, ``labels`` all -1; see
            :mod:`sibnet.data.prepared`).
        withheld_labels: the true labels of an unlabeled image, kept apart (``None``: none).
    """

    table: str
    row: int
    id: str
    split: str
    patient_id: str
    labels: tuple[int, ...]
    source: str
    path: str
    lesion_masks: tuple[str | None, ...] | None = None
    organ_masks: tuple[str, ...] | None = None
    labeled: bool = True
    withheld_labels: tuple[int, ...] | None = None


@dataclass(frozen=True)
class ImageSettings:
    """How every image file is brought to the prepared size (see :mod:`sibnet.data.images`)."""

    size: tuple[int, int]
    resize: str
    intensity: str = "dtype"


class Batch(TypedDict):
    """``n`` images already in memory, the keywords of
    :meth:`sibnet.data.prepared.PreparedWriter.add`.

    ``images`` ``(n, 1, H, W)`` float in [0, 1] or uint8; ``labels`` ``(n, C)`` 1/0 (-1:
    unknown); ``ids``, ``splits``, ``patient_ids``, ``sources`` ``n`` strings each;
    ``source_sha256`` ``n`` hashes (absent: of the stored images); ``lesion_masks``
    ``(n, C, H, W)`` and ``organ_masks`` ``(n, K, H, W)`` bool (absent: not annotated);
    ``extra`` further manifest columns, ``n`` values each; ``labeled`` ``n`` flags (absent:
    all labeled) and ``withheld_labels`` ``n`` entries, each the true labels kept apart for an
    unlabeled image or ``None`` (absent: none).
    """

    images: np.ndarray
    labels: np.ndarray
    ids: Sequence[str]
    splits: Sequence[str]
    patient_ids: Sequence[str]
    sources: Sequence[str]
    source_sha256: NotRequired[Sequence[str]]
    lesion_masks: NotRequired[np.ndarray]
    organ_masks: NotRequired[np.ndarray]
    extra: NotRequired[dict[str, Sequence[Any]]]
    labeled: NotRequired[Sequence[bool]]
    withheld_labels: NotRequired[Sequence[Sequence[int] | None]]


@dataclass
class Plan:
    """What an adapter found: the dataset's description, its rows and its problems.

    Exactly one of :attr:`records` (with :attr:`settings`) and :attr:`batches` (with
    :attr:`image_size`) gives the rows, see the module docstring.

    ``lesion_masks`` says whether the dataset stores per-class lesion masks at all (a source
    configured with lesion masks); organ masks are stored when ``organs`` is not empty.
    ``source`` is the ``dataset.json`` description of where the data came from (its ``tables``,
    or ``table``, name the label tables in reading order, which orders the problems); for file
    plans ingest appends the image settings and the number of rows rejected. ``problems`` are
    those of single rows (skippable); ``fatal`` those that leaving rows out cannot solve (a
    split that would be empty), reported with them but never skipped. An array plan's
    ``batches`` yields only rows without problems. ``unlabeled_origin`` says, for
    ``dataset.json``, what made some rows unlabeled (``None`` when every row is labeled).
    """

    name: str
    task: str
    classes: list[str]
    organs: list[str]
    records: list[Record] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    fatal: list[Problem] = field(default_factory=list)
    lesion_masks: bool = False
    source: dict[str, Any] = field(default_factory=dict)
    settings: ImageSettings | None = None
    batches: Callable[[], Iterator[Batch]] | None = None
    image_size: tuple[int, int] | None = None
    unlabeled_origin: str | None = None

    def __post_init__(self) -> None:
        if (self.batches is None) == (self.settings is None):
            raise ValueError(
                f"plan {self.name!r}: give records with settings (image files) or batches with "
                "image_size (arrays), exactly one of the two"
            )
        if self.batches is not None and (self.image_size is None or self.records):
            raise ValueError(f"plan {self.name!r}: an array plan has image_size and no records")
