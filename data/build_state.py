"""The resumable state of one builder's output folder: its params file and its journal.

A build folder holds ``<name>_params.json`` (the settings that made it) and ``.<name>_journal.jsonl``
(one line per finished item: its key, a fingerprint of its input, and its output record). The params
file is written first, so an interrupted build is recognisable as ours; resuming with other settings
is refused instead of silently mixing two builds. The journal is appended line by line as items
finish (a torn last line from a crash is ignored) and rewritten atomically in input order at the end,
so a finished build is byte-identical however often it was interrupted.
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import IO, Any

from common.atomic import atomic_write, atomic_write_json
from data.records import Record, resolve_path

logger = logging.getLogger(__name__)

__all__ = ["OWNED_NAMES", "Journal", "JournalEntry", "journal_path", "params_path", "prepare_out_dir"]

# Files and folders a builder owns in its output folder (removed by ``overwrite``).
OWNED_NAMES: tuple[str, ...] = ("images", "conditioning_images", "train.jsonl", "failed.jsonl", "shards")

JournalEntry = dict[str, Any]  # {"key": str, "input": {...}, "record": {...}, "notes": [str, ...]}


def params_path(out: Path, name: str) -> Path:
    """``<name>_params.json``: the settings a build was made with."""
    return out / f"{name}_params.json"


def journal_path(out: Path, name: str) -> Path:
    """``.<name>_journal.jsonl``: the items a build has finished."""
    return out / f".{name}_journal.jsonl"


def _normalise(params: Mapping[str, Any]) -> dict[str, Any]:
    """Round-trip through JSON (Paths become strings, tuples lists) so it compares with the file."""
    return json.loads(json.dumps(dict(params), default=str))


def prepare_out_dir(out: Path, name: str, params: Mapping[str, Any], overwrite: bool) -> None:
    """Make ``out`` ready to (re)build into; refuse to mix files from other settings or builders."""
    wanted = _normalise(params)
    own = params_path(out, name)
    owned = [out / n for n in OWNED_NAMES] + [own, journal_path(out, name)]
    if overwrite:
        for path in owned:
            if path.is_dir():
                shutil.rmtree(path)
            elif path.exists():
                path.unlink()
    elif own.exists():
        previous = json.loads(own.read_text(encoding="utf-8"))
        if previous != wanted:
            raise FileExistsError(
                f"{out} holds a {name} build with {previous}, not {wanted}; "
                "pass overwrite=True (--overwrite) to replace it"
            )
    elif any(path.exists() for path in owned):
        raise FileExistsError(
            f"{out} already holds dataset files not made by the {name} builder; "
            "pass overwrite=True (--overwrite) to replace them"
        )
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(own, wanted)


def _outputs_exist(out: Path, record: Record) -> bool:
    return all(resolve_path(out, p).is_file() for p in (record.image, record.conditioning_image))


class Journal:
    """Finished items of a build: loaded on resume, appended as items finish, compacted at the end."""

    def __init__(self, out: Path, name: str, path: Path | None = None) -> None:
        """``path``: another journal file of the same build (a shard's part), else the build's own."""
        self.out = out
        self.path = journal_path(out, name) if path is None else path
        self.entries: dict[str, JournalEntry] = {}
        self._handle: IO[str] | None = None

    def load(self) -> None:
        """Read previous entries; a line that does not parse (torn by a crash) is dropped."""
        if not self.path.exists():
            return
        for line in self.path.read_text(encoding="utf-8").splitlines():
            try:
                entry = json.loads(line)
                Record.from_json(entry["record"])
            except (KeyError, TypeError, ValueError):  # ValueError includes JSONDecodeError
                logger.debug("journal %s: dropping unreadable line %r", self.path, line[:80])
                continue
            self.entries[entry["key"]] = entry

    def finished(self, key: str, fingerprint: dict[str, Any]) -> JournalEntry | None:
        """The entry for ``key`` if it was built from the same input and its files still exist."""
        entry = self.entries.get(key)
        if entry is None or entry["input"] != _normalise(fingerprint):
            return None
        if not _outputs_exist(self.out, Record.from_json(entry["record"])):
            return None
        return entry

    def add(self, entry: JournalEntry) -> None:
        """Record a newly finished item durably enough to survive a crash of this process."""
        self.entries[entry["key"]] = entry
        if self._handle is None:
            self._handle = self.path.open("a", encoding="utf-8")
        self._handle.write(json.dumps(entry, ensure_ascii=False) + "\n")
        self._handle.flush()

    def compact(self, keys_in_order: Iterable[str]) -> None:
        """Rewrite atomically with only ``keys_in_order`` (this run's finished items), in that order."""
        self.close()
        with atomic_write(self.path) as handle:
            for key in keys_in_order:
                handle.write(json.dumps(self.entries[key], ensure_ascii=False) + "\n")

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None
