"""glibc's malloc told to keep freed buffers, so a loop that frees and re-allocates the same large
buffers (a builder's images, a CPU training step's activations) stops page-faulting them back in.

By default glibc returns a freed multi-megabyte block to the OS (mmap'd blocks, and the top of the heap
beyond the trim threshold) and the next allocation of that size faults in fresh zeroed pages: kernel
time on every image or step (measured: ~8 of ~40 ms per 1024² Canny record in `bench/bench_canny.py`;
2,000-3,000 faults and 6-8 ms of kernel CPU time per ~80 ms tiny-SDXL CPU training step).
Setting both thresholds keeps those blocks in the process's heap; setting both also switches off glibc's
dynamic adjustment, which is what makes either one alone useless.
"""

from __future__ import annotations

import ctypes
import logging
import sys

logger = logging.getLogger(__name__)

# glibc <malloc.h>
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
TRIM_THRESHOLD = 512 << 20
"""Keep up to this much free memory at the top of the heap."""
MMAP_THRESHOLD = 32 << 20
"""glibc's maximum: smaller blocks come from the (reused) heap, larger ones are still mmap'd."""


def keep_freed_memory() -> bool:
    """Sets both thresholds for this process (and the processes it forks later). Returns False, and
    changes nothing, where the C library is not glibc."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and other non-glibc C libraries
        logger.debug("no glibc; malloc thresholds left alone")
        return False
    trim_set = mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD)
    mmap_set = mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)  # set even if the first was refused
    return bool(trim_set and mmap_set)
