"""Setup of each builder worker process: one thread per process, and freed buffers kept mapped.

The runner already runs one process per core, so OpenCV's own thread pool would only oversubscribe.
And glibc, by default, hands freed multi-megabyte buffers (a decoded 1024² image, Canny's gradient
planes) back to the OS and page-faults fresh zeroed ones in for the next image: ~8 of ~40 ms per
1024² Canny record, all kernel time (measured in bench/bench_canny.py). Fixing both thresholds keeps
those buffers in the worker's heap; workers are short-lived, so the retained memory goes with them.
"""

from __future__ import annotations

import ctypes
import logging
import sys

import cv2

logger = logging.getLogger(__name__)

__all__ = ["init_worker", "keep_freed_memory"]

# glibc <malloc.h>
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
TRIM_THRESHOLD = 512 << 20  # keep up to this much free memory at the top of the heap
MMAP_THRESHOLD = 32 << 20  # glibc's maximum; smaller blocks come from the (reused) heap


def keep_freed_memory() -> None:
    """Stop glibc returning freed buffers to the OS between images (setting both thresholds also
    switches off glibc's dynamic adjustment, which is what makes one alone useless). No-op off glibc."""
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:  # musl and other non-glibc Linux
        logger.debug("no glibc; malloc thresholds left alone")
        return
    libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD)
    libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)


def init_worker() -> None:
    """Process-pool initializer for builder workers."""
    cv2.setNumThreads(1)
    keep_freed_memory()
