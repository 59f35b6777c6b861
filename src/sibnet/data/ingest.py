"""Write a :class:`~sibnet.data.plan.Plan` as a prepared dataset: the one way every source is
prepared.

:func:`ingest` takes the plan an adapter made (:mod:`sibnet.data.adapters`) and writes the
prepared dataset (:mod:`sibnet.data.prepared`) through
:class:`~sibnet.data.prepared.PreparedWriter`. Problems of the plan are handled the same for
every source: fatal ones (which no skipping solves) stop it before anything is read; row
problems stop it too unless ``skip_invalid``, which leaves those rows out and lists them in
``rejects.csv`` inside the dataset.

**Array plans** (``plan.batches``: the phantom, MedMNIST) stream their in-memory images batch
by batch into the writer, which writes a shard each time ``shard_size`` rows have come: memory
holds one batch and one shard. Row problems are all known from the plan, so a plan with any
(and not ``skip_invalid``) stops before an image is produced.

**File plans** (``plan.records``: CheXpert, folder) list one
:class:`~sibnet.data.plan.Record` per image (id, split, patient, labels, the image file and
its mask files), decoded here:

- **Parallel.** Images are decoded, hashed and resized (:mod:`sibnet.data.images`) by
  ``workers`` processes; results come back in plan order, so the output does not depend on the
  number of workers.
- **Bounded memory.** The plan is cut into chunks of ``shard_size`` records; one chunk at a
  time is decoded and written as a shard, so memory holds one shard (``shard_size`` × H × W
  bytes plus masks), whatever the dataset's size.
- **Resumable.** Each finished chunk is kept in a work folder beside the output
  (``.<dataset>.partial/``), as a one-shard prepared dataset of its own, with a key: the
  SHA-256 of its records, of the size and modification time of every file it reads, and of the
  image settings. A rerun after an
  interruption (or after fixing bad files) reuses every chunk whose key still matches and
  decodes only the rest. The work folder is removed once the dataset is complete.
- **Problems together.** An unreadable, truncated or corrupt image, a missing file, or a mask
  whose shape differs from its image's, is a problem of its row; decoding carries on so that
  all problems are reported at once with the adapter's own, in row order
  (:func:`~sibnet.data.problems.order_problems`, the source's tables in reading order).
  Unless ``skip_invalid``, any problem stops :func:`ingest` with a
  :class:`~sibnet.data.problems.DataError` before the output is written (chunks already
  decoded stay in the work folder for the rerun). With ``skip_invalid`` the rows are left out
  and listed in ``rejects.csv`` inside the dataset. Problems no skipping can solve (the plan's
  ``fatal`` ones, such as too few patients for the splits, and an empty split) stop it before
  decoding, whatever ``skip_invalid``, without suggesting it.
- **Progress.** A tqdm bar over images (quiet off a terminal) and one log line per shard.

Shards are numbered in plan order; a chunk that lost every row to problems is dropped and the
shards after it renumbered, so the output is the same as if those rows had never been planned.
The finished chunks' shards are hard-linked into the output (:meth:`PreparedWriter.append
<sibnet.data.prepared.PreparedWriter.append>`), not rewritten.
"""

from __future__ import annotations

import hashlib
import json
import logging
import multiprocessing
import os
import shutil
from collections.abc import Iterator, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm import tqdm

from sibnet.data.decode import decode_record
from sibnet.data.plan import ImageSettings, Plan, Record
from sibnet.data.prepared import FORMAT, PreparedDataset, PreparedWriter
from sibnet.data.problems import DataError, Problem, order_problems, write_rejects
from sibnet.data.splits import SPLITS
from sibnet.files import atomic_dir, write_json

__all__ = ["ingest", "work_folder"]

log = logging.getLogger(__name__)

_WORK_FORMAT = "sibnet-ingest/2"


def work_folder(output: Path) -> Path:
    """The resumable work folder of the prepared dataset ``output``: ``.<name>.partial``."""
    return Path(output).parent / f".{Path(output).name}.partial"


def _stat(path: str | None) -> list[int] | None:
    if path is None:
        return None
    try:
        info = os.stat(path)
    except OSError:
        return None
    return [info.st_size, info.st_mtime_ns]


def _chunk_key(records: Sequence[Record], settings: ImageSettings) -> str:
    """What a finished chunk depends on: its records, their files' size + mtime, the settings."""
    digest = hashlib.sha256(json.dumps(asdict(settings), sort_keys=True).encode())
    for record in records:
        files = [record.path, *(record.lesion_masks or ()), *(record.organ_masks or ())]
        entry = {"record": asdict(record), "stat": [_stat(f) for f in files]}
        digest.update(json.dumps(entry, sort_keys=True).encode())
    return digest.hexdigest()


class _Decoder:
    """Maps :func:`~sibnet.data.decode.decode_record` over records, in order, in ``workers``
    processes (spawned: callers' scripts need an ``if __name__ == "__main__":`` guard) or, for
    one worker, in this process."""

    def __init__(self, workers: int) -> None:
        self.pool = multiprocessing.get_context("spawn").Pool(workers) if workers > 1 else None

    def map(self, records: Sequence[Record], settings: ImageSettings) -> Iterator[dict[str, Any]]:
        tasks = [(r, settings) for r in records]
        if self.pool is None:
            return map(decode_record, tasks)
        return self.pool.imap(decode_record, tasks, chunksize=8)

    def close(self) -> None:
        if self.pool is not None:
            self.pool.close()
            self.pool.join()


def _writer(root: Path, plan: Plan, size: tuple[int, int], shard_size: int, **kw: Any):
    return PreparedWriter(
        root=root,
        name=plan.name,
        task=plan.task,
        classes=plan.classes,
        organs=plan.organs,
        image_size=size,
        shard_size=shard_size,
        lesion_masks=plan.lesion_masks,
        unlabeled_origin=plan.unlabeled_origin,
        **kw,
    )


def _decode_chunk(
    work: Path,
    index: int,
    records: Sequence[Record],
    plan: Plan,
    settings: ImageSettings,
    decoder: _Decoder,
    progress: tqdm,
) -> dict[str, Any]:
    """Decode one chunk into ``work`` as the one-shard dataset ``chunk-<index>``; return its
    entry (also saved): its problems and how many rows it kept."""
    problems: list[Problem] = []
    part = _writer(work / f"chunk-{index:05d}", plan, settings.size, max(1, len(records)))
    kept = 0
    for record, result in zip(records, decoder.map(records, settings), strict=True):
        progress.update(1)
        if "problem" in result:
            problems.append(result["problem"])
            continue
        kept += 1
        part.add(
            images=result["image"][None, None],
            labels=np.array([record.labels], dtype=np.int8),
            ids=[record.id],
            splits=[record.split],
            patient_ids=[record.patient_id],
            sources=[record.source],
            source_sha256=[result["source_sha256"]],
            lesion_masks=None if result["lesion_masks"] is None else result["lesion_masks"][None],
            organ_masks=None if result["organ_masks"] is None else result["organ_masks"][None],
            labeled=[record.labeled],
            withheld_labels=[record.withheld_labels],
        )
    if kept:
        part.close()
    return {"problems": [asdict(p) for p in problems], "rows": kept}


def _chunks(records: Sequence[Record], size: int) -> list[Sequence[Record]]:
    return [records[i : i + size] for i in range(0, len(records), size)]


def _labeled_splits(part: Path) -> set[str]:
    """The splits in which the prepared dataset ``part`` has labeled images."""
    meta = json.loads((part / "dataset.json").read_text("utf-8"))
    counts = dict(meta["split_counts"])
    counts["train"] -= (meta.get("unlabeled") or {}).get("images", 0)
    return {split for split, count in counts.items() if count}


def _empty_splits(splits: Sequence[str], table: str, *, left_out: bool) -> list[Problem]:
    """A problem for each split with no image (``left_out``: rows with problems were)."""
    present = set(splits)
    why = " once the rows with problems are left out" if left_out else ""
    return [
        Problem(table, None, f"the {s} split is empty{why}; every split needs at least one image")
        for s in SPLITS
        if s not in present
    ]


def ingest(
    plan: Plan,
    output: Path,
    *,
    shard_size: int,
    workers: int,
    skip_invalid: bool,
    work: Path | None = None,
) -> pd.DataFrame:
    """Write the prepared dataset ``output`` from ``plan`` (see the module docstring).

    Args:
        plan: the adapter's rows (records or batches), problems and description.
        output: the prepared dataset folder; replaced atomically, only on success.
        shard_size: rows per shard (and, for file plans, per decoded chunk).
        workers: decoding processes for file plans (1: in this process).
        skip_invalid: leave rows with problems out (listed in ``rejects.csv``) instead of
            failing.
        work: the resumable work folder of a file plan; default :func:`work_folder` of
            ``output``.

    Returns:
        The manifest written.

    Raises:
        DataError: the plan or the files have problems (and not ``skip_invalid``), or a split
            is left empty. Nothing is written to ``output``.
    """
    if plan.batches is not None:
        return _write_arrays(plan, Path(output), shard_size=shard_size, skip_invalid=skip_invalid)
    return _ingest_files(
        plan,
        Path(output),
        shard_size=shard_size,
        workers=workers,
        skip_invalid=skip_invalid,
        work=work,
    )


def _write_arrays(plan: Plan, output: Path, *, shard_size: int, skip_invalid: bool) -> pd.DataFrame:
    """Stream an array plan's batches into ``output`` (its problems are all known already)."""
    assert plan.batches is not None and plan.image_size is not None
    problems = list(plan.problems)
    if plan.fatal:
        raise DataError(problems + plan.fatal, skippable=False)
    if problems and not skip_invalid:
        raise DataError(problems)
    with atomic_dir(output) as tmp:
        writer = _writer(tmp, plan, plan.image_size, shard_size, source=plan.source)
        for batch in plan.batches():
            writer.add(**batch)
        manifest = writer.close()
        if problems:
            write_rejects(tmp / "rejects.csv", problems)
        PreparedDataset.open(tmp, verify=True)
    return manifest


def _ingest_files(
    plan: Plan,
    output: Path,
    *,
    shard_size: int,
    workers: int,
    skip_invalid: bool,
    work: Path | None,
) -> pd.DataFrame:
    """Decode a file plan's records into ``output``, resumably (see the module docstring)."""
    settings = plan.settings
    assert settings is not None
    work = work_folder(output) if work is None else Path(work)
    table = plan.source.get("table", plan.name)
    tables = plan.source.get("tables", [table])
    problems = list(plan.problems)
    fatal = plan.fatal or _empty_splits(  # unlabeled images fill no split
        [r.split for r in plan.records if r.labeled], table, left_out=bool(problems)
    )
    if fatal:  # neither decoding nor leaving rows out can help: report what is known now
        raise DataError(order_problems(problems + fatal, tables), skippable=False)

    identity = json.loads(
        json.dumps({"format": _WORK_FORMAT, "prepared": FORMAT, "settings": asdict(settings)})
    )
    state = work / "state.json"
    if work.exists() and (
        not state.is_file() or json.loads(state.read_text(encoding="utf-8")) != identity
    ):
        shutil.rmtree(work)
    work.mkdir(parents=True, exist_ok=True)
    write_json(state, identity)

    chunks = _chunks(plan.records, shard_size)
    entries: list[dict[str, Any]] = []
    decoder: _Decoder | None = None
    resumed = 0
    try:
        with tqdm(total=len(plan.records), unit="img", desc="prepare", disable=None) as progress:
            for index, records in enumerate(chunks):
                key = _chunk_key(records, settings)
                done = work / f"chunk-{index:05d}.json"
                if done.is_file():
                    entry = json.loads(done.read_text(encoding="utf-8"))
                    if entry.get("key") == key:
                        entries.append(entry)
                        progress.update(len(records))
                        resumed += 1
                        continue
                    done.unlink()
                shutil.rmtree(work / f"chunk-{index:05d}", ignore_errors=True)
                if decoder is None:
                    decoder = _Decoder(workers)
                entry = _decode_chunk(work, index, records, plan, settings, decoder, progress)
                entry["key"] = key
                write_json(done, entry)  # written last: marks the chunk finished
                entries.append(entry)
                log.info(
                    "shard %d/%d: %d images, %d problem(s)",
                    index + 1,
                    len(chunks),
                    entry["rows"],
                    len(entry["problems"]),
                )
    finally:
        if decoder is not None:
            decoder.close()
    if resumed:
        log.info("resumed %d of %d shards from %s", resumed, len(chunks), work)

    problems = order_problems(
        problems + [Problem(**p) for e in entries for p in e["problems"]], tables
    )
    if problems and not skip_invalid:
        report = work / "problems.csv"
        write_rejects(report, problems)
        raise DataError(problems, report=report)
    parts = [work / f"chunk-{i:05d}" for i, e in enumerate(entries) if e["rows"]]
    present = {split for part in parts for split in _labeled_splits(part)}
    empty = _empty_splits(sorted(present), table, left_out=bool(problems))
    if empty:
        raise DataError(order_problems(problems + empty, tables), skippable=False)

    with atomic_dir(output) as tmp:
        writer = _writer(
            tmp,
            plan,
            settings.size,
            shard_size,
            source={**plan.source, **asdict(settings), "rejected_rows": len(problems)},
        )
        for part in parts:
            writer.append(part)
        if problems:
            write_rejects(tmp / "rejects.csv", problems)
        manifest = writer.close()
        PreparedDataset.open(tmp, verify=True)
    shutil.rmtree(work, ignore_errors=True)
    return manifest
