"""Memory hygiene for long passes: freed large blocks go back to the OS, and hot temporaries are reused.

Each batch allocates and frees many tensors of a few to a hundred MB. glibc's malloc raises its mmap threshold
after the first such free and then serves later large requests from its heap, which fragments and never
shrinks: resident memory grows well past what is live. A fixed threshold keeps large blocks on mmap (freed at
once); the price, a page fault per fresh page, is kept small by reusing the largest per-layer temporaries
through :class:`Workspace`.
"""

from __future__ import annotations

import ctypes
import ctypes.util

import torch

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # mallopt parameter numbers in glibc's malloc.h
_THRESHOLD_BYTES = 1024 * 1024
# Fixing the mmap threshold also fixes the trim threshold at its 128 KB default: every free at the heap's top
# would hand the pages back, and the next allocation fault them in again (a report's KS tables, 0.5 MB each,
# spent a third of its time so). Up to this much free heap is kept instead.
_TRIM_BYTES = 64 * 1024 * 1024


def return_large_blocks_to_os() -> bool:
    """Fix glibc's mmap and trim thresholds; returns whether it took effect (a no-op where glibc is absent)."""
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
        return libc is not None and bool(libc.mallopt(_M_MMAP_THRESHOLD, _THRESHOLD_BYTES)) \
            and bool(libc.mallopt(_M_TRIM_THRESHOLD, _TRIM_BYTES))
    except (OSError, AttributeError):
        return False


class Workspace:
    """Reusable scratch tensors, one per (shape, dtype): a temporary written by every layer of every batch."""

    def __init__(self, device: torch.device | str = "cpu") -> None:
        self.device = device
        self._buffers: dict[tuple[str, tuple[int, ...], torch.dtype], torch.Tensor] = {}

    def get(self, name: str, shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
        """A tensor of that shape and dtype with arbitrary contents. Buffers are told apart by name too, so two
        temporaries that happen to share a shape never share memory."""
        key = (name, tuple(shape), dtype)
        if key not in self._buffers:
            self._buffers[key] = torch.empty(shape, dtype=dtype, device=self.device)
        return self._buffers[key]
