"""scipy's BLAS and LAPACK (OpenBLAS, behind the CPU eigendecompositions) keep a thread pool of their own, sized
to every core unless OPENBLAS_NUM_THREADS or OMP_NUM_THREADS say otherwise, whatever torch's thread count
(``--threads``). On shared cores two pools of busy-waiting threads slow each other down (a 576-wide syrk measured
9× slower with 2 OpenBLAS threads than with 1 on a loaded 2-core machine), so the curvature code says how many
threads scipy's routines get."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache

import scipy.linalg  # noqa: F401 - loaded before the controller looks for its BLAS
from threadpoolctl import ThreadpoolController


@cache
def _controller() -> ThreadpoolController:
    """The BLAS libraries loaded in this process (found once: a lookup costs ~15 ms, a limit through it ~0.02 ms)."""
    return ThreadpoolController()


@contextmanager
def scipy_threads(count: int) -> Iterator[None]:
    """Run the block with scipy's (and numpy's) BLAS limited to ``count`` threads."""
    with _controller().limit(limits=count, user_api="blas"):
        yield
