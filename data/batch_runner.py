"""Run a *batched* builder in the main process, with the runner's resume, journal and summary semantics.

:func:`data.runner.run_builder` maps a per-item function over a process pool: right for Canny, wrong
for a neural captioner, whose model should be loaded once and fed batches (on a GPU, or on all CPU
cores through torch's own threads). A batch builder takes a list of items and returns one result per
item, in order: :class:`~data.build_types.Built`, or :class:`~data.build_types.Failure` for an input it could
not use (one bad image must not fail its whole batch)::

    def batch_builder(items: list[Item], out: Path, settings: S) -> list[Built | Failure]

Everything else is the runner's: ``<name>_params.json`` (resume with other settings refused), the
journal (finished items kept on resume), ``train.jsonl`` and ``failed.jsonl`` written atomically in
input order, the logged summary, and ``strict``.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Sequence
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

from common.progress import progress_bar
from data.build_state import Journal, prepare_out_dir
from data.build_types import (
    BuildFailed,
    BuildSummary,
    Built,
    Failure,
    Item,
    Outcome,
    journal_entry,
    log_summary,
    write_failures,
)
from data.ray_engine import RayOptions, run_sharded
from data.records import Record, write_records

logger = logging.getLogger(__name__)

__all__ = ["BatchBuilder", "run_batched", "run_batches"]

S = TypeVar("S")
BatchBuilder = Callable[[list[Item], Path, Any], list["Built | Failure"]]


def _account(
    summary: BuildSummary, journal: Journal, item: Item, result: Built | Failure, strict: bool
) -> bool:
    """Fold one result into the summary and journal; True if built. Raises BuildFailed if strict."""
    if isinstance(result, Failure):
        summary.failed.append(result)
        if strict:
            raise BuildFailed(result)
        return False
    journal.add(journal_entry(item, result))
    summary.built += 1
    return True


def _finish(summary: BuildSummary, journal: Journal, items: Sequence[Item], done: set[str]) -> None:
    """Compact the journal and write ``train.jsonl`` in input order; total up the notes."""
    keys = [item.key for item in items if item.key in done]
    journal.compact(keys)
    write_records(summary.jsonl, (Record.from_json(journal.entries[key]["record"]) for key in keys))
    for key in keys:
        summary.notes.update(journal.entries[key]["notes"])


def run_batches(
    builder: BatchBuilder, out: Path, settings: Any, batch_size: int, items: list[Item]
) -> list[Outcome]:
    """``builder`` over ``items`` in batches, as per-item outcomes: the unit a Ray actor is handed."""
    outcomes = []
    for start in range(0, len(items), batch_size):
        batch = items[start : start + batch_size]
        for item, result in zip(batch, builder(batch, out, settings), strict=True):
            if isinstance(result, Failure):
                outcomes.append(Outcome(item.key, failure=result))
            else:
                outcomes.append(Outcome(item.key, entry=journal_entry(item, result)))
    return outcomes


def run_batched(
    name: str,
    builder: BatchBuilder,
    items: Sequence[Item],
    out: str | Path,
    settings: S,
    *,
    batch_size: int = 8,
    strict: bool = False,
    overwrite: bool = False,
    engine: RayOptions | None = None,
) -> BuildSummary:
    """Build (or resume) ``out/train.jsonl`` by feeding ``builder`` batches of ``items``; with
    ``engine``, as shards on a Ray actor pool that loads the model once per actor."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if len({item.key for item in items}) != len(items):
        raise ValueError("item keys must be unique")
    out = Path(out)
    prepare_out_dir(out, name, {"builder": name, **dataclasses.asdict(settings)}, overwrite)  # type: ignore[call-overload]
    if engine is not None:
        work = partial(run_batches, builder, out, settings, batch_size)
        return run_sharded(name, work, items, out, replace(engine, actor_pool=True), strict=strict)
    journal = Journal(out, name)
    journal.load()
    summary = BuildSummary(name, out / "train.jsonl")
    done = {item.key for item in items if journal.finished(item.key, item.fingerprint()) is not None}
    summary.kept = len(done)
    todo = [item for item in items if item.key not in done]
    try:
        with progress_bar(len(items), name, "item", initial=summary.kept) as bar:
            for start in range(0, len(todo), batch_size):
                batch = todo[start : start + batch_size]
                results = builder(batch, out, settings)
                for item, result in zip(batch, results, strict=True):
                    if _account(summary, journal, item, result, strict):
                        done.add(item.key)
                bar.update(len(batch))
    finally:
        write_failures(out / "failed.jsonl", summary.failed)
        journal.close()
    _finish(summary, journal, items, done)
    log_summary(summary)
    return summary
