"""Memory hygiene for long passes: activations recycled through the heap, larger blocks back to the OS at once,
the heap's free pages handed back between stages, and hot temporaries reused.

Each batch allocates and frees many tensors of one to a hundred MB. Left alone, glibc's malloc raises its mmap
threshold after the first such free and then serves every later request up to 32 MB from its heap, which
fragments and never shrinks: resident memory grows well past what is live. A fixed threshold of 2 MB keeps the
logits, the wide layers' activations, the per-sequence products and the factors on mmap (freed at once) but
recycles the many smaller activations through the heap. With every block above 1 MB on mmap, each batch
page-faulted those afresh: on SmolLM2-135M's peer workload (benchmarks/results/peers.md) the fit's system time
was 34 s of 218 CPU s, and with 2 MB a pass takes 5-7 s less for 0.25 GB more peak memory (4 MB was no faster
and took 0.07 GB more; benchmarks/results/profile-fit.md). Between the fit's stages (after the covariance pass and
the eigendecompositions) the heap's free pages go back to the OS, so that one stage's leftovers do not add to the
next one's peak. Temporaries written by every layer of every batch are reused through :class:`Workspace`.
"""

from __future__ import annotations

import ctypes
import ctypes.util
from functools import cache

import torch

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # mallopt parameter numbers in glibc's malloc.h
_THRESHOLD_BYTES = 2 * 1024 * 1024
# Fixing the mmap threshold also fixes the trim threshold at its 128 KB default: every free at the heap's top
# would hand the pages back, and the next allocation fault them in again (a report's KS tables, 0.5 MB each,
# spent a third of its time so). Up to this much free heap is kept instead.
_TRIM_BYTES = 64 * 1024 * 1024


@cache
def _libc() -> ctypes.CDLL | None:
    """The C library when it is glibc (the one with ``mallopt`` and ``malloc_trim``), else None."""
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
        return libc if libc is not None and hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None
    except OSError:
        return None


def return_large_blocks_to_os() -> bool:
    """Fix glibc's mmap and trim thresholds; returns whether it took effect (a no-op where glibc is absent)."""
    libc = _libc()
    return libc is not None and bool(libc.mallopt(_M_MMAP_THRESHOLD, _THRESHOLD_BYTES)) \
        and bool(libc.mallopt(_M_TRIM_THRESHOLD, _TRIM_BYTES))


def release_free_heap() -> None:
    """Hand the heap's free pages back to the OS at the end of a stage (a no-op where glibc is absent)."""
    libc = _libc()
    if libc is not None:
        libc.malloc_trim(0)


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
