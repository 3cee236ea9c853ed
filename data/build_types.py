"""What a build is made of, whichever engine runs it: the builder's contract and the run's results.

A builder takes an :class:`Item` and returns :class:`Built`, or raises :class:`BadInput` or
:class:`SkipItem` (see :mod:`data.runner`); each item comes back from its worker as an :class:`Outcome`,
and a run ends in a :class:`BuildSummary` with its ``failed.jsonl``. The local engine
(:mod:`data.runner`, :mod:`data.batch_runner`) and the Ray engine (:mod:`data.ray_engine`,
:mod:`data.shards`) all build on these, so none of them imports another for its types.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from common.atomic import atomic_write
from data.build_state import JournalEntry
from data.records import Record

logger = logging.getLogger(__name__)

__all__ = [
    "BadInput",
    "BuildFailed",
    "BuildSummary",
    "Built",
    "Failure",
    "Item",
    "Outcome",
    "SkipItem",
    "journal_entry",
    "log_summary",
    "write_failures",
]


@dataclass(frozen=True)
class Item:
    """One input: ``key`` names its outputs (unique, file-name safe), ``source`` is the input path
    used in reports, ``record`` the input record (absolute paths) or None for raw files."""

    key: str
    source: str
    record: Record | None = None

    def fingerprint(self) -> dict[str, Any]:
        """What the input was (JSON); a journaled output is reused only if this is unchanged."""
        return {"source": self.source, "record": None if self.record is None else self.record.to_json()}


@dataclass(frozen=True)
class Built:
    """A builder's result: the output record (paths relative to ``out``) and notes such as
    "palette PNG converted to RGB (lossless)", which are counted in the summary."""

    record: Record
    notes: tuple[str, ...] = ()


class BadInput(Exception):
    """The item's input cannot be used; ``reason`` should not repeat the path (it is reported apart)."""

    def __init__(self, reason: str, path: str | Path | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.path = None if path is None else str(path)


class SkipItem(Exception):
    """The item needs no output (e.g. no text found); not an error, counted as skipped."""


@dataclass(frozen=True)
class Failure:
    """One failed or skipped item, as written to ``failed.jsonl``."""

    key: str
    path: str
    reason: str


class BuildFailed(ValueError):
    """Raised in strict mode at the first failure; finished items stay journaled for a resume."""

    def __init__(self, failure: Failure) -> None:
        super().__init__(f"strict: {failure.path}: {failure.reason}")
        self.failure = failure


@dataclass
class BuildSummary:
    """What a run did. ``kept`` items were finished by an earlier run and not rebuilt."""

    name: str
    jsonl: Path
    built: int = 0
    kept: int = 0
    failed: list[Failure] = field(default_factory=list)
    skipped: list[Failure] = field(default_factory=list)
    notes: Counter[str] = field(default_factory=Counter)

    @property
    def written(self) -> int:
        return self.built + self.kept


class Outcome(NamedTuple):
    """One item's result as sent back from a worker: a journal entry, or a failure (maybe a skip)."""

    key: str
    entry: JournalEntry | None = None
    failure: Failure | None = None
    skipped: bool = False


def journal_entry(item: Item, built: Built) -> JournalEntry:
    """The journal line of a built item: its key, what its input was, its record and notes."""
    return {
        "key": item.key,
        "input": item.fingerprint(),
        "record": built.record.to_json(),
        "notes": list(built.notes),
    }


def write_failures(path: Path, failures: Sequence[Failure]) -> None:
    """``failed.jsonl``: one ``{"key", "path", "reason"}`` per failed item of this run (may be empty)."""
    with atomic_write(path) as handle:
        for failure in failures:
            handle.write(json.dumps(dataclasses.asdict(failure), ensure_ascii=False) + "\n")


def log_summary(summary: BuildSummary, examples: int = 3) -> None:
    """Log counts, then failure/skip reasons grouped with a few example paths, then notes."""
    logger.info(
        "%s: %d records in %s (%d built, %d kept from an earlier run), %d skipped, %d failed",
        summary.name,
        summary.written,
        summary.jsonl,
        summary.built,
        summary.kept,
        len(summary.skipped),
        len(summary.failed),
    )
    for label, entries, level in (
        ("failed", summary.failed, logging.WARNING),
        ("skipped", summary.skipped, logging.INFO),
    ):
        by_reason: dict[str, list[str]] = {}
        for entry in entries:
            by_reason.setdefault(entry.reason, []).append(entry.path)
        for reason, paths in sorted(by_reason.items(), key=lambda kv: -len(kv[1])):
            shown = ", ".join(paths[:examples]) + (", ..." if len(paths) > examples else "")
            logger.log(level, "  %s %d× %s: %s", label, len(paths), reason, shown)
    if summary.failed:
        logger.warning("  every failure with its path and reason: %s", summary.jsonl.parent / "failed.jsonl")
    for note, count in summary.notes.most_common():
        logger.info("  note %d× %s", count, note)
