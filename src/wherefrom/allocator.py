"""Make glibc return freed large blocks to the OS, so peak memory is what is live, not what was ever used.

Each pass allocates and frees many tensors of a few to a hundred MB. glibc's malloc raises its mmap threshold
after the first such free and then serves later large requests from the heap, which fragments and never
shrinks: resident memory grows well past what is live. A fixed threshold keeps large blocks on mmap. Called by
the CLI; a no-op where glibc is absent.
"""

from __future__ import annotations

import ctypes
import ctypes.util

_M_MMAP_THRESHOLD = -3  # mallopt parameter number in glibc's malloc.h
_THRESHOLD_BYTES = 128 * 1024


def return_large_blocks_to_os() -> bool:
    """Fix glibc's mmap threshold at 128 KiB; returns whether it took effect."""
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        libc = ctypes.CDLL(name)
        return bool(libc.mallopt(_M_MMAP_THRESHOLD, _THRESHOLD_BYTES))
    except (OSError, AttributeError):  # not glibc
        return False
