"""LAPACK's ``dsyevd`` on the CPU, called through ctypes into buffers each thread keeps: the fit's float64
eigendecompositions.

Two builds of the same routine. On Intel CPUs, MKL's, which torch carries in its own library: 9.4 s for 30 of the
peer workload's 1536-wide and 20 of its 576-wide factors on 2 cores, against 10.2-10.4 s for scipy's (OpenBLAS).
Elsewhere, scipy's: on an AMD EPYC, MKL took 0.86 s for one 1536-wide factor against OpenBLAS's 0.64 s
(benchmarks/results/profile-fit.md). ctypes releases the GIL for the call, so several threads decompose at once.

Each thread keeps its float64 matrix and LAPACK's workspaces (57 MB for a 1536-wide factor) from one factor to
the next: allocated afresh, each factor page-faulted 85 MB in (22,000 faults; 680,000 over those 50 factors
against 95,000 now), which with numpy's ``eigh`` had cost 10.7-12.6 s for the same 50 factors.
"""

from __future__ import annotations

import ctypes
import threading
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np
import torch

_Int = ctypes.c_int  # LAPACK's integers: 32-bit in scipy's build and in torch's MKL (LP64, which torch's own calls assume)
_DSYEVD = ctypes.CFUNCTYPE(None, ctypes.c_char_p, ctypes.c_char_p, *[ctypes.c_void_p] * 9)


class EighFailed(RuntimeError):
    """LAPACK's divide and conquer did not converge (``info`` > 0)."""


@dataclass(frozen=True)
class Routine:
    """One build's ``dsyevd`` and, for MKL, the call that sets the calling thread's own thread count."""

    name: str
    dsyevd: Callable
    set_local_threads: Callable[[int], int] | None = None  # returns the thread's previous count (0: the global one)


@cache
def routine() -> Routine:
    """The ``dsyevd`` this process uses: MKL's on an Intel CPU where torch carries MKL, else scipy's."""
    return (_mkl() if _cpu_vendor() == "GenuineIntel" else None) or _scipy()


def _cpu_vendor() -> str:
    """The x86 vendor string ("GenuineIntel", "AuthenticAMD"), or "" where /proc/cpuinfo does not say."""
    try:
        with open("/proc/cpuinfo") as info:
            return next((line.split(":", 1)[1].strip() for line in info if line.startswith("vendor_id")), "")
    except OSError:
        return ""


def _mkl() -> Routine | None:
    """MKL's ``dsyevd`` from torch's CPU library (already loaded), or None where torch was built without MKL."""
    library = Path(torch.__file__).parent / "lib" / "libtorch_cpu.so"
    if not torch.backends.mkl.is_available() or not library.is_file():
        return None
    try:
        handle = ctypes.CDLL(str(library))
        dsyevd, set_local = handle.dsyevd_, handle.MKL_Set_Num_Threads_Local
    except (OSError, AttributeError):
        return None
    set_local.argtypes, set_local.restype = [ctypes.c_int], ctypes.c_int
    return Routine("MKL", _DSYEVD(ctypes.cast(dsyevd, ctypes.c_void_p).value), set_local)


def _scipy() -> Routine:
    """scipy's ``dsyevd`` (its OpenBLAS), from the function table of ``scipy.linalg.cython_lapack``."""
    from scipy.linalg import cython_lapack

    capsule = cython_lapack.__pyx_capi__["dsyevd"]
    name_of = ctypes.pythonapi.PyCapsule_GetName
    name_of.argtypes, name_of.restype = [ctypes.py_object], ctypes.c_char_p
    pointer_of = ctypes.pythonapi.PyCapsule_GetPointer
    pointer_of.argtypes, pointer_of.restype = [ctypes.py_object, ctypes.c_char_p], ctypes.c_void_p
    return Routine("scipy", _DSYEVD(pointer_of(capsule, name_of(capsule))))


class _Buffers(threading.local):
    """Per thread and per size: the float64 matrix LAPACK overwrites with the eigenvectors, and its workspaces."""

    def __init__(self) -> None:
        self.by_size: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = {}

    def of(self, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        if n not in self.by_size:  # dsyevd's documented minimum workspaces for eigenvectors (JOBZ = "V")
            self.by_size[n] = (np.empty((n, n)), np.empty(n), np.empty(1 + 6 * n + 2 * n * n),
                               np.empty(3 + 5 * n, dtype=np.intc))
        return self.by_size[n]


_buffers = _Buffers()


def release_buffers() -> None:
    """Free the calling thread's buffers (a worker thread's are freed when it ends)."""
    _buffers.by_size.clear()


def eigh_upper(matrix: torch.Tensor, divisor: float, basis_dtype: torch.dtype, threads: int
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """Ascending eigenvalues (float64) and orthonormal eigenvectors (columns, in ``basis_dtype``) of the symmetric
    matrix whose upper triangle ``matrix`` (on the CPU) holds, divided by ``divisor`` in float64.

    ``threads``: MKL's threads for this call, set for the calling thread only. scipy's OpenBLAS takes the
    process-wide limit of :func:`wherefrom.engine.threads.scipy_threads`, which the caller holds.
    """
    chosen = routine()
    n = matrix.shape[0]
    work_matrix, values, work, iwork = _buffers.of(n)
    torch.from_numpy(work_matrix).copy_(matrix).div_(divisor)
    info, size = _Int(0), _Int(n)  # row-major upper triangle = LAPACK's column-major lower one ("L")
    previous = chosen.set_local_threads(threads) if chosen.set_local_threads else None
    try:
        chosen.dsyevd(b"V", b"L", ctypes.byref(size), work_matrix.ctypes.data, ctypes.byref(size), values.ctypes.data,
                      work.ctypes.data, ctypes.byref(_Int(work.size)), iwork.ctypes.data,
                      ctypes.byref(_Int(iwork.size)), ctypes.byref(info))
    finally:
        if chosen.set_local_threads:
            chosen.set_local_threads(previous)
    if info.value > 0:
        raise EighFailed(f"LAPACK dsyevd did not converge (info = {info.value})")
    if info.value < 0:
        raise ValueError(f"LAPACK dsyevd rejected argument {-info.value}")
    # Column-major eigenvectors are the rows of the row-major buffer: its transpose holds them as columns.
    vectors = torch.empty((n, n), dtype=basis_dtype).copy_(torch.from_numpy(work_matrix).T)
    return torch.from_numpy(values.copy()), vectors
