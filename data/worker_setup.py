"""Setup of each builder worker process: its thread budget, and freed buffers kept mapped.

The local engine runs one process per core, and the Ray engine gives each task or actor its CPUs, so
OpenCV's and OCR's own thread pools get that budget (one thread by default) instead of oversubscribing.
And glibc would hand each image's freed multi-megabyte buffers back to the OS and page-fault fresh ones
in for the next image (see :mod:`common.host_memory`); workers are short-lived, so the retained memory
goes with them.
"""

from __future__ import annotations

import cv2

from common.host_memory import keep_freed_memory

__all__ = ["init_worker", "worker_threads"]

_THREADS: list[int] = []  # set once this process is a builder worker


def init_worker(threads: int = 1) -> None:
    """Process-pool initializer for builder workers (also run by Ray tasks and actors)."""
    cv2.setNumThreads(threads)
    if not _THREADS:
        keep_freed_memory()
    _THREADS[:] = [threads]


def worker_threads() -> int | None:
    """The threads this worker may use; None in a main process (libraries keep their defaults)."""
    return _THREADS[0] if _THREADS else None
