"""Rank-zero aware logging and the metrics.jsonl writer."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import TextIO

import diffusers
import transformers

from common.atomic import atomic_write_text

LOG_FORMAT = "%(asctime)s %(levelname)s [rank %(rank)s] %(name)s: %(message)s"


def configure_logging(level: str, rank: int) -> None:
    """Full logging on rank 0; warnings and errors only on the others, so N ranks do not print N times."""
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter(LOG_FORMAT, datefmt="%H:%M:%S"))
    handler.addFilter(_RankFilter(rank))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level if rank == 0 else "WARNING")
    logging.getLogger("accelerate").setLevel("WARNING")  # its per-file checkpoint lines drown the run's own
    if rank == 0:
        transformers.utils.logging.set_verbosity_warning()
        diffusers.utils.logging.set_verbosity_warning()
    else:
        transformers.utils.logging.set_verbosity_error()
        diffusers.utils.logging.set_verbosity_error()


class _RankFilter(logging.Filter):
    def __init__(self, rank: int) -> None:
        super().__init__()
        self.rank = rank

    def filter(self, record: logging.LogRecord) -> bool:
        record.rank = self.rank
        return True


class MetricsLog:
    """Appends one JSON object per logged step; appending keeps the history of a resumed run.

    Lines after `keep_through_step` (the resumed checkpoint's step; -1 for a fresh start) are dropped
    first: their steps are redone, so each step keeps one line, and a line torn by a kill goes too.
    """

    def __init__(self, path: Path, keep_through_step: int = -1) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.is_file():
            lines = path.read_text(encoding="utf-8").splitlines()
            kept = [ln for ln in lines if (step := _step(ln)) is not None and step <= keep_through_step]
            atomic_write_text(path, "".join(f"{line}\n" for line in kept))
        self._file: TextIO = path.open("a", encoding="utf-8")

    def write(self, step: int, values: dict[str, float]) -> None:
        self._file.write(json.dumps({"step": step, **values}) + "\n")
        self._file.flush()

    def close(self) -> None:
        self._file.close()


def _step(line: str) -> int | None:
    """The step of a metrics.jsonl line; None for a torn or foreign line."""
    try:
        step = json.loads(line).get("step")
    except (json.JSONDecodeError, AttributeError):
        return None
    return step if isinstance(step, int) else None
