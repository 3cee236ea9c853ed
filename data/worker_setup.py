"""Setup of each builder worker process: one thread per process, and freed buffers kept mapped.

The runner already runs one process per core, so OpenCV's own thread pool would only oversubscribe.
And glibc would hand each image's freed multi-megabyte buffers back to the OS and page-fault fresh ones
in for the next image (see :mod:`data.host_memory`); workers are short-lived, so the retained memory
goes with them.
"""

from __future__ import annotations

import cv2

from data.host_memory import keep_freed_memory

__all__ = ["init_worker"]


def init_worker() -> None:
    """Process-pool initializer for builder workers."""
    cv2.setNumThreads(1)
    keep_freed_memory()
