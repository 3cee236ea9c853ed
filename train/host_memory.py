"""Hand freed host memory back to the operating system at moments when the trainer holds little.

glibc keeps memory that the CPU allocator freed (a step's activations) in its heap, so a checkpoint
written right after a step allocates its serialisation buffers on top of that and raises the peak RSS
by the size of the checkpoint. `malloc_trim` returns the free pages first. Elsewhere (musl, macOS,
Windows) there is no such call and this is a no-op.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import logging

logger = logging.getLogger(__name__)


@functools.cache
def _malloc_trim() -> ctypes._CFuncPtr | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    libc = ctypes.CDLL(name)
    try:
        return libc.malloc_trim
    except AttributeError:  # not glibc
        return None


def release_free_heap() -> bool:
    """Returns freed heap pages to the OS; True if the C library could do it."""
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True
