"""One progress bar per long job, with rate and ETA, on a terminal and in a log alike.

tqdm's ``disable=None`` hides the bar when stderr is not a terminal, so a job run from a script, a
Makefile piped to ``tee`` or a batch system printed nothing for minutes. Here a terminal gets the usual
bar; anything else gets a log line every ``LOG_EVERY_S`` seconds (and at the start and the end) such as
``glyph: 152/380 (40%) elapsed 01:00, ETA 01:30, 2.53 item/s``.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

from tqdm import tqdm

__all__ = ["LOG_EVERY_ENV", "progress_bar"]

logger = logging.getLogger("progress")

LOG_EVERY_ENV = "SKINFORGE_PROGRESS_EVERY_S"
LOG_EVERY_S = 30.0
LOG_FORMAT = "{desc}: {n_fmt}/{total_fmt} ({percentage:.0f}%) elapsed {elapsed}, ETA {remaining}, {rate_fmt}"
LOG_FORMAT_NO_TOTAL = "{desc}: {n_fmt} elapsed {elapsed}, {rate_fmt}"


class _LogLines:
    """A file for tqdm that turns each redraw into one log line."""

    def write(self, text: str) -> None:
        line = text.strip("\r\n ")
        if line:
            logger.info("%s", line)

    def flush(self) -> None:
        """Nothing buffered: every write is already a log record."""


def progress_bar(total: int, desc: str, unit: str = "item", initial: int = 0, **options: Any) -> tqdm:
    """A tqdm bar for ``total`` units: drawn on a terminal, else logged every ``LOG_EVERY_S`` seconds
    (``SKINFORGE_PROGRESS_EVERY_S`` overrides it)."""
    if sys.stderr.isatty():
        return tqdm(total=total, desc=desc, unit=unit, initial=initial, dynamic_ncols=True, **options)
    every = float(os.environ.get(LOG_EVERY_ENV, LOG_EVERY_S))
    return tqdm(
        total=total,
        desc=desc,
        unit=unit,
        initial=initial,
        file=_LogLines(),
        mininterval=every,
        maxinterval=every,
        bar_format=LOG_FORMAT if total else LOG_FORMAT_NO_TOTAL,
        **options,
    )
