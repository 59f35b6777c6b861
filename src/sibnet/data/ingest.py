"""Decode a planned list of image files into the prepared layout: parallel, bounded, resumable.

File-based adapters (CheXpert, folder) read their label tables into a :class:`Plan`: one
:class:`Record` per image (id, split, patient, labels, the image file and its mask files) and
the :class:`~sibnet.data.problems.Problem` s found on the way. :func:`ingest` then turns the plan
into a prepared dataset (:mod:`sibnet.data.prepared`):

- **Parallel.** Images are decoded, hashed and resized (:mod:`sibnet.data.images`) by
  ``workers`` processes; results come back in plan order, so the output does not depend on the
  number of workers.
- **Bounded memory.** The plan is cut into chunks of ``shard_size`` records; one chunk at a
  time is decoded and written as a shard, so memory holds one shard (``shard_size`` × H × W
  bytes plus masks), whatever the dataset's size.
- **Resumable.** Each finished chunk is kept in a work folder beside the output
  (``.<dataset>.partial/``) with a key: the SHA-256 of its records, of the size and
  modification time of every file it reads, and of the image settings. A rerun after an
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
"""

from __future__ import annotations

import hashlib
import json
import logging
import multiprocessing
import os
import shutil
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm import tqdm

from sibnet.data.decode import ImageSettings, Record, decode_record
from sibnet.data.prepared import FORMAT, PreparedDataset, store_shard, write_index
from sibnet.data.problems import DataError, Problem, order_problems, write_rejects
from sibnet.data.splits import SPLITS
from sibnet.files import atomic_dir, write_json

__all__ = ["Plan", "ingest", "work_folder"]

log = logging.getLogger(__name__)

_WORK_FORMAT = "sibnet-ingest/1"


@dataclass
class Plan:
    """What an adapter found: the dataset's description, its records and its problems.

    ``lesion_masks`` says whether the dataset stores per-class lesion masks at all (a source
    configured with lesion masks); organ masks are stored when ``organs`` is not empty.
    ``source`` is the ``dataset.json`` description of where the data came from (its ``tables``,
    or ``table``, name the label tables in reading order, which orders the problems).
    ``problems`` are those of single rows (skippable); ``fatal`` those that leaving rows out
    cannot solve (a split that would be empty), reported with them but never skipped.
    """

    name: str
    task: str
    classes: list[str]
    organs: list[str]
    records: list[Record]
    problems: list[Problem] = field(default_factory=list)
    fatal: list[Problem] = field(default_factory=list)
    lesion_masks: bool = False
    source: dict[str, Any] = field(default_factory=dict)


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


def _decode_chunk(
    work: Path,
    index: int,
    records: Sequence[Record],
    plan: Plan,
    settings: ImageSettings,
    decoder: _Decoder,
    progress: tqdm,
) -> dict[str, Any]:
    """Decode one chunk into ``work`` as shard ``index``; return its record (also saved)."""
    kept: list[tuple[Record, dict[str, Any]]] = []
    problems: list[Problem] = []
    for record, result in zip(records, decoder.map(records, settings), strict=True):
        progress.update(1)
        if "problem" in result:
            problems.append(result["problem"])
        else:
            kept.append((record, result))
    entry: dict[str, Any] = {
        "problems": [asdict(p) for p in problems],
        "shard": None,
    }
    if kept:
        height, width = settings.size

        def stack(key: str, channels: int) -> np.ndarray:
            return np.stack(
                [
                    np.zeros((channels, height, width), bool) if r[key] is None else r[key]
                    for _, r in kept
                ]
            )

        shard, hashes = store_shard(
            work,
            index,
            np.stack([r["image"] for _, r in kept])[:, None],
            stack("lesion_masks", len(plan.classes)) if plan.lesion_masks else None,
            stack("organ_masks", len(plan.organs)) if plan.organs else None,
        )
        frame = pd.DataFrame(
            {
                "id": [r.id for r, _ in kept],
                "split": [r.split for r, _ in kept],
                "patient_id": [r.patient_id for r, _ in kept],
                "labels": [list(r.labels) for r, _ in kept],
                "row": np.arange(len(kept), dtype=np.int32),
                "has_lesion_masks": [r.lesion_masks is not None for r, _ in kept],
                "has_organ_masks": [r.organ_masks is not None for r, _ in kept],
                "source": [r.source for r, _ in kept],
                "source_sha256": [res["source_sha256"] for _, res in kept],
                "content_hash": hashes,
            }
        )
        frame.to_parquet(work / f"chunk-{index:05d}.parquet", index=False)
        entry["shard"] = shard
    return entry


def _link_or_copy(source: Path, target: Path) -> None:
    """Hard-link ``source`` to ``target`` (copy across file systems); the work copy stays until
    the dataset is complete, so a failure while finishing loses no decoded shard."""
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)


def _chunks(records: Sequence[Record], size: int) -> list[Sequence[Record]]:
    return [records[i : i + size] for i in range(0, len(records), size)]


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
    settings: ImageSettings,
    shard_size: int,
    workers: int,
    skip_invalid: bool,
    work: Path | None = None,
) -> pd.DataFrame:
    """Write the prepared dataset ``output`` from ``plan`` (see the module docstring).

    Args:
        plan: the adapter's records and problems.
        output: the prepared dataset folder; replaced atomically, only on success.
        settings: target size, aspect handling and intensity scaling.
        shard_size: records per chunk (and shard).
        workers: decoding processes (1: in this process).
        skip_invalid: leave rows with problems out (listed in ``rejects.csv``) instead of
            failing.
        work: the resumable work folder; default :func:`work_folder` of ``output``.

    Returns:
        The manifest written.

    Raises:
        DataError: the plan or the files have problems (and not ``skip_invalid``), or a split
            is left empty. Nothing is written to ``output``.
    """
    output = Path(output)
    work = work_folder(output) if work is None else Path(work)
    table = plan.source.get("table", plan.name)
    tables = plan.source.get("tables", [table])
    problems = list(plan.problems)
    fatal = plan.fatal or _empty_splits(
        [r.split for r in plan.records], table, left_out=bool(problems)
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
                    entry["shard"]["rows"] if entry["shard"] else 0,
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
    frames = [
        pd.read_parquet(work / f"chunk-{i:05d}.parquet").assign(chunk=i)
        for i, e in enumerate(entries)
        if e["shard"] is not None
    ]
    if problems and not skip_invalid:
        report = work / "problems.csv"
        write_rejects(report, problems)
        raise DataError(problems, report=report)
    manifest = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    empty = _empty_splits(
        manifest["split"].tolist() if len(manifest) else [], table, left_out=bool(problems)
    )
    if empty:
        raise DataError(order_problems(problems + empty, tables), skippable=False)

    with atomic_dir(output) as tmp:
        shards = []
        numbers = {chunk: n for n, chunk in enumerate(sorted(set(manifest["chunk"])))}
        for chunk, number in numbers.items():
            shard = dict(entries[chunk]["shard"])
            for kind in ("images", "lesion_masks", "organ_masks"):
                if kind in shard:
                    relative = f"{kind}/shard-{number:05d}.npy"
                    (tmp / kind).mkdir(exist_ok=True)
                    _link_or_copy(work / shard[kind]["path"], tmp / relative)
                    shard[kind] = {"path": relative, "sha256": shard[kind]["sha256"]}
            shards.append(shard)
        manifest["shard"] = manifest["chunk"].map(numbers)
        if problems:
            write_rejects(tmp / "rejects.csv", problems)
        manifest = write_index(
            tmp,
            manifest.drop(columns="chunk"),
            shards,
            name=plan.name,
            task=plan.task,
            classes=plan.classes,
            organs=plan.organs,
            image_size=settings.size,
            source={**plan.source, **asdict(settings), "rejected_rows": len(problems)},
        )
        PreparedDataset.open(tmp, verify=True)
    shutil.rmtree(work, ignore_errors=True)
    return manifest
