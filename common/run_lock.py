"""One writer per run folder: an advisory lock on `<run>/.skinforge.lock`, held while the run lives.

`flock` is released by the kernel when its holder dies (even by kill -9), so a crashed run never leaves
the folder locked; the file's text only names the holder (pid, host, start time) for the refusal. Within
one process a new trainer takes the lock over from an earlier one that was never closed (a notebook
re-running setup after an error): one process writes one folder at a time anyway.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from pathlib import Path
from typing import TextIO

LOCK_FILE = ".skinforge.lock"
_HELD: dict[Path, TextIO] = {}
"""The locks this process holds, by folder."""


class RunFolderBusy(RuntimeError):
    """Another live process is writing this folder."""


class RunLock:
    """Held from `acquire()` to `release()` (or the process's end)."""

    def __init__(self, folder: Path) -> None:
        self.path = folder / LOCK_FILE
        self._file: TextIO | None = None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        earlier = _HELD.pop(self.path.resolve(), None)
        if earlier is not None:
            earlier.close()
        handle = self.path.open("a+", encoding="utf-8")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "an unknown process"
            handle.close()
            raise RunFolderBusy(
                f"{self.path.parent} is being written by another run ({holder}); wait for it to end, stop "
                "it, or choose another train.output_dir"
            ) from None
        handle.seek(0)
        handle.truncate()
        started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime())
        handle.write(json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "started": started}))
        handle.flush()
        self._file = _HELD[self.path.resolve()] = handle

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def release(self) -> None:
        if self._file is not None:
            if _HELD.get(self.path.resolve()) is self._file:
                del _HELD[self.path.resolve()]
            self._file.close()  # closing the descriptor releases the lock
            self._file = None
