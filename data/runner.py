"""Run a per-record builder over a dataset: process pool, resume, progress, summary, failed.jsonl.

A *builder* is a plain, picklable module-level function over one input item::

    def builder(item: Item, out: Path, settings: S) -> Built

It reads ``item.record`` (paths absolute) or ``item.source``, writes its output files under ``out``
(atomically: :mod:`common.atomic`, :func:`data.image_io.write_png`), and returns ``Built(record)``
whose paths are relative to ``out``. A bad input raises ``BadInput`` (reason, optional path); an item
with nothing to do raises ``SkipItem``; these types live in :mod:`data.build_types`. Nothing else about
the run leaks into the builder, so the same function also runs on a Ray cluster (``engine=``,
:mod:`data.ray_engine`).
``settings`` is a frozen dataclass; it is written to ``<name>_params.json`` and resuming with
different settings is refused.

Example::

    @dataclass(frozen=True)
    class GreySettings:
        version: int = 1

    def grey(item: Item, out: Path, settings: GreySettings) -> Built:
        image = read_image(Path(item.record.image))          # raises BadInput on bad files
        rel = f"conditioning_images/{item.key}.png"
        write_png(out / rel, cv2.cvtColor(image.pixels, cv2.COLOR_BGR2GRAY))
        return Built(replace(item.record, conditioning_image=rel), image.notes)

    summary = run_builder("grey", grey, items_from_jsonl("in/train.jsonl"), "out", GreySettings())

The runner gives every builder: a process pool (``workers``, default all cores) with a bounded number
of chunks in flight (memory stays flat on 100k items), output in input order whatever the worker
count, a progress bar, resume (items journaled as finished whose files still exist are not rebuilt),
``train.jsonl`` and ``failed.jsonl`` written atomically at the end, a logged summary, and ``strict``
to stop at the first failure. The CLI side lives in :mod:`data.builder_cli`.

Workers are started by a fork server (forking a parent whose OpenCV or torch thread pools have run
can deadlock), so builders and settings must be importable, picklable module-level objects, and a
script calling ``run_builder`` with ``workers > 1`` needs the usual ``if __name__ == "__main__":``
guard. ``workers=1`` runs inline in the calling process (no pool; easiest to debug).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import multiprocessing
import os
from collections import Counter, deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

from common.progress import progress_bar
from data.build_state import Journal, prepare_out_dir
from data.build_types import (
    BadInput,
    BuildFailed,
    BuildSummary,
    Built,
    Failure,
    Item,
    Outcome,
    SkipItem,
    journal_entry,
    log_summary,
    write_failures,
)
from data.ray_engine import RayOptions, run_sharded
from data.records import Record, write_records
from data.worker_setup import init_worker

logger = logging.getLogger(__name__)

__all__ = ["run_builder", "run_chunk"]

S = TypeVar("S")
IN_FLIGHT_PER_WORKER = 4  # chunks queued per worker: keeps every core busy, memory bounded


def _run_one(builder: Callable[[Item, Path, Any], Built], out: Path, settings: Any, item: Item) -> Outcome:
    try:
        built = builder(item, out, settings)
    except BadInput as exc:
        return Outcome(item.key, failure=Failure(item.key, exc.path or item.source, exc.reason))
    except SkipItem as exc:
        return Outcome(item.key, failure=Failure(item.key, item.source, str(exc)), skipped=True)
    return Outcome(item.key, entry=journal_entry(item, built))


def run_chunk(
    builder: Callable[[Item, Path, Any], Built], out: Path, settings: Any, items: list[Item]
) -> list[Outcome]:
    """The builder over ``items`` in order: the unit both engines hand to a worker."""
    return [_run_one(builder, out, settings, item) for item in items]


def _ordered_map(
    fn: Callable[[list[Item]], list[Outcome]], chunks: Iterator[list[Item]], workers: int
) -> Iterator[list[Outcome]]:
    """Map ``fn`` over chunks in input order with at most ``workers * 4`` chunks in flight."""
    if workers == 1:
        yield from map(fn, chunks)
        return
    # forkserver, not fork: forking a parent whose OpenCV/torch thread pools already ran deadlocks the
    # child; the fork server is a clean process with the heavy imports preloaded, so workers start fast.
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["data.runner", "data.worker_setup"])
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=init_worker)
    pending: deque[Future[list[Outcome]]] = deque()
    try:
        for chunk in chunks:
            pending.append(pool.submit(fn, chunk))
            if len(pending) >= workers * IN_FLIGHT_PER_WORKER:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    finally:  # also on strict failure / Ctrl-C: drop queued work, let running items finish
        pool.shutdown(wait=True, cancel_futures=True)


def _chunks(items: Sequence[Item], size: int) -> Iterator[list[Item]]:
    for start in range(0, len(items), size):
        yield list(items[start : start + size])


def _check_keys(items: Sequence[Item]) -> None:
    duplicates = [key for key, count in Counter(item.key for item in items).items() if count > 1]
    if duplicates:
        raise ValueError(f"item keys must be unique; duplicated: {duplicates[:5]}")


def run_builder(
    name: str,
    builder: Callable[[Item, Path, S], Built],
    items: Sequence[Item],
    out: str | Path,
    settings: S,
    *,
    workers: int | None = None,
    strict: bool = False,
    overwrite: bool = False,
    chunksize: int | None = None,
    engine: RayOptions | None = None,
) -> BuildSummary:
    """Build (or resume) ``out/train.jsonl`` by running ``builder`` over ``items``; see the module doc.

    ``settings`` must be a dataclass instance (picklable; saved as the build's params). Raises
    :class:`BuildFailed` in ``strict`` mode, FileExistsError if ``out`` holds another build.
    ``engine`` runs the same builder as shards on a Ray cluster instead (:mod:`data.ray_engine`).
    """
    out = Path(out)
    workers = workers or os.cpu_count() or 1
    _check_keys(items)
    prepare_out_dir(out, name, {"builder": name, **dataclasses.asdict(settings)}, overwrite)  # type: ignore[call-overload]
    if engine is not None:
        work = partial(run_chunk, builder, out, settings)
        return run_sharded(name, work, items, out, engine, strict=strict)
    journal = Journal(out, name)
    journal.load()
    summary = BuildSummary(name, out / "train.jsonl")
    kept = {item.key for item in items if journal.finished(item.key, item.fingerprint()) is not None}
    todo = [item for item in items if item.key not in kept]
    summary.kept = len(kept)
    built: set[str] = set()
    chunk = chunksize or max(1, min(8, len(todo) // (workers * 16)))  # small chunks: short idle tail
    task = partial(run_chunk, builder, out, settings)
    try:
        with progress_bar(len(items), name, "item", initial=summary.kept) as bar:
            results = contextlib.closing(_ordered_map(task, _chunks(todo, chunk), workers))
            with results as outcome_chunks:  # closed at once on a strict failure: stops the pool
                for outcomes in outcome_chunks:
                    for outcome in outcomes:
                        _account(summary, journal, outcome, strict)
                        if outcome.entry is not None:
                            built.add(outcome.key)
                    bar.update(len(outcomes))
    finally:
        write_failures(out / "failed.jsonl", summary.failed)
        journal.close()
    done = [item.key for item in items if item.key in kept or item.key in built]
    journal.compact(done)
    write_records(summary.jsonl, (Record.from_json(journal.entries[key]["record"]) for key in done))
    for key in done:
        summary.notes.update(journal.entries[key]["notes"])
    log_summary(summary)
    return summary


def _account(summary: BuildSummary, journal: Journal, outcome: Outcome, strict: bool) -> None:
    """Fold one item's outcome into the summary and journal; raise BuildFailed if strict."""
    if outcome.entry is not None:
        journal.add(outcome.entry)
        summary.built += 1
        return
    assert outcome.failure is not None  # a worker returns an entry or a failure
    if outcome.skipped:
        summary.skipped.append(outcome.failure)
        return
    summary.failed.append(outcome.failure)
    if strict:
        raise BuildFailed(outcome.failure)
