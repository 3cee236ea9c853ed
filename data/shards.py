"""Shards: a build cut into runs of consecutive input items, each finished and marked done on its own.

A cluster engine cannot share one journal file between machines, so each shard keeps its own, under
``out/shards/``::

    train.part-00012.jsonl    journal entries of the shard's built items, in input order
    failed.part-00012.jsonl   its failures and skips ({"key", "path", "reason", "skipped"})
    part-00012.done           written last: the digest of the shard's inputs and its counts

All three are written atomically, the marker after the parts, so a shard whose marker exists with the
digest of the same inputs is complete. A rerun skips clean done shards; a shard without a marker (lost
with its worker or driver), or with failures or skips (retried on every run, as the local engine
retries them), runs again and reuses those of its previous entries whose input and files are
unchanged. :func:`merge_shards` then writes ``train.jsonl``, ``failed.jsonl`` and the journal exactly
as :func:`data.runner.run_builder` writes them, so either engine can resume the other's build.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

from common.atomic import atomic_write, atomic_write_json
from data.build_state import Journal, JournalEntry, journal_path
from data.build_types import Failure, Item, Outcome, write_failures
from data.records import Record, write_records

logger = logging.getLogger(__name__)

__all__ = [
    "SHARDS_DIR",
    "Shard",
    "ShardResult",
    "ShardWork",
    "make_shards",
    "merge_shards",
    "read_done",
    "run_shard",
]

SHARDS_DIR = "shards"
ShardWork = Callable[[list[Item]], list[Outcome]]  # the builder over a list of items (picklable)


@dataclass(frozen=True)
class Shard:
    """Items ``index * size ...`` of the input; ``digest`` names exactly what they were."""

    index: int
    items: tuple[Item, ...]
    digest: str


class ShardResult(NamedTuple):
    """What one shard's run did (small: this is what travels back to the driver)."""

    index: int
    items: int
    built: int
    kept: int
    failed: list[Failure]
    skipped: list[Failure]

    @property
    def clean(self) -> bool:
        """Nothing to retry: every item is built."""
        return not self.failed and not self.skipped


def _digest(items: Sequence[Item]) -> str:
    text = json.dumps([[item.key, item.fingerprint()] for item in items], ensure_ascii=False, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def make_shards(items: Sequence[Item], size: int) -> list[Shard]:
    """Consecutive shards of ``size`` items (the last may be shorter), in input order."""
    if size < 1:
        raise ValueError(f"shard size must be >= 1, got {size}")
    chunks = [tuple(items[start : start + size]) for start in range(0, len(items), size)]
    return [Shard(index, chunk, _digest(chunk)) for index, chunk in enumerate(chunks)]


def _paths(out: Path, index: int) -> tuple[Path, Path, Path]:
    """(entries part, failures part, done marker) of shard ``index``."""
    folder = out / SHARDS_DIR
    return (
        folder / f"train.part-{index:05d}.jsonl",
        folder / f"failed.part-{index:05d}.jsonl",
        folder / f"part-{index:05d}.done",
    )


def _read_failures(path: Path) -> tuple[list[Failure], list[Failure]]:
    failed, skipped = [], []
    for line in path.read_text(encoding="utf-8").splitlines():
        obj = json.loads(line)
        failure = Failure(obj["key"], obj["path"], obj["reason"])
        (skipped if obj["skipped"] else failed).append(failure)
    return failed, skipped


def read_done(out: Path, shard: Shard) -> ShardResult | None:
    """The shard's result if its marker says it finished with these very inputs, else None."""
    _, failures, done = _paths(out, shard.index)
    if not done.is_file():
        return None
    marker = json.loads(done.read_text(encoding="utf-8"))
    if marker["digest"] != shard.digest:
        return None
    failed, skipped = _read_failures(failures)
    return ShardResult(
        shard.index, len(shard.items), 0, len(shard.items) - len(failed) - len(skipped), failed, skipped
    )


def run_shard(work: ShardWork, out: Path, shard: Shard) -> ShardResult:
    """Build one shard (on a worker): reuse its still-valid previous entries, build the rest, write the
    parts, then the done marker."""
    entries_path, failures_path, done_path = _paths(out, shard.index)
    previous = Journal(out, "", entries_path)
    previous.load()
    kept = {
        item.key: entry
        for item in shard.items
        if (entry := previous.finished(item.key, item.fingerprint())) is not None
    }
    outcomes = {o.key: o for o in work([item for item in shard.items if item.key not in kept])}
    entries: list[JournalEntry] = []
    failed: list[Failure] = []
    skipped: list[Failure] = []
    with atomic_write(failures_path) as handle:
        for item in shard.items:
            if item.key in kept:
                entries.append(kept[item.key])
                continue
            outcome = outcomes[item.key]
            if outcome.entry is not None:
                entries.append(outcome.entry)
                continue
            assert outcome.failure is not None  # a worker returns an entry or a failure
            (skipped if outcome.skipped else failed).append(outcome.failure)
            line = {**dataclasses.asdict(outcome.failure), "skipped": outcome.skipped}
            handle.write(json.dumps(line, ensure_ascii=False) + "\n")
    with atomic_write(entries_path) as handle:
        for entry in entries:
            handle.write(json.dumps(entry, ensure_ascii=False) + "\n")
    built = len(entries) - len(kept)
    counts = {"items": len(shard.items), "built": built, "kept": len(kept), "failed": len(failed)}
    atomic_write_json(done_path, {"digest": shard.digest, **counts, "skipped": len(skipped)})
    return ShardResult(shard.index, len(shard.items), built, len(kept), failed, skipped)


def _entries(out: Path, shards: Sequence[Shard]) -> Iterator[dict[str, Any]]:
    for shard in shards:
        entries_path, _, _ = _paths(out, shard.index)
        for line in entries_path.read_text(encoding="utf-8").splitlines():
            yield json.loads(line)


def merge_shards(
    out: Path, name: str, shards: Sequence[Shard]
) -> tuple[list[Failure], list[Failure], Counter[str]]:
    """Write the journal, ``train.jsonl`` and ``failed.jsonl`` from every (done) shard, in input order,
    as the local engine writes them; return (failures, skips, notes). Streams: memory stays flat."""
    notes: Counter[str] = Counter()
    with atomic_write(journal_path(out, name)) as handle:
        for entry in _entries(out, shards):
            handle.write(json.dumps(entry, ensure_ascii=False) + "\n")
            notes.update(entry["notes"])
    write_records(out / "train.jsonl", (Record.from_json(entry["record"]) for entry in _entries(out, shards)))
    failed: list[Failure] = []
    skipped: list[Failure] = []
    for shard in shards:
        shard_failed, shard_skipped = _read_failures(_paths(out, shard.index)[1])
        failed += shard_failed
        skipped += shard_skipped
    write_failures(out / "failed.jsonl", failed)
    return failed, skipped, notes
