"""A sketch's packed sign bits contracted with float queries on the host, in exact integer arithmetic.

Each query row q (largest magnitude 1) is rounded to integers of ``QUERY_BITS`` bits, q_int = round(q·m) with
m = 2^(QUERY_BITS−1) − 1, written in two's complement as bit planes t_p ∈ {0, 1}^D:
q_int = −2^(P−1)·t_(P−1) + Σ_(p<P−1) 2^p·t_p. For a row's bits b, Σ_i q_int,i·b_i = Σ_p ±2^p·popcount(t_p AND b):
each plane is an AND and a population count over the packed row's 64-bit words, which the CPU does 512 bits at a
time (numba compiles the loop to its vector popcount), with no unpacked copy of the row. The integer sum is exact;
what differs from the float query is only its rounding, at most 1/(2m) per bucket (m = 2047).

numba is a dependency; where it cannot be imported (or compile), :func:`plane_kernel` is None and the index
uses the int8 kernel. The planes are packed as sketch.py packs the rows (8 buckets a byte, most significant first),
so the same bytes viewed as 64-bit words line up bucket for bucket.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache

import numpy as np
import torch

QUERY_BITS = 12  # the query's integer width: a bucket's rounding is at most 2⁻¹² of its largest magnitude
# (each bit a pass over the row: 16 bits take 27% more time; 12 are still 4 times more accurate than the
# bfloat16 query of the int8 kernel, measured in docs/index.md)
PLANE_WEIGHTS = np.array([1 << p for p in range(QUERY_BITS - 1)] + [-(1 << (QUERY_BITS - 1))], dtype=np.int64)

PlaneKernel = Callable[[np.ndarray, np.ndarray, np.ndarray, np.ndarray], None]


def query_planes(queries: torch.Tensor) -> tuple[np.ndarray, torch.Tensor]:
    """Queries [Q, D] (largest magnitude at most 1; D a multiple of 64) as their bit planes [Q, QUERY_BITS, D/64]
    uint64, and the integers they stand for [Q, D] int64 (q_int = round(q · (2^(QUERY_BITS−1) − 1)))."""
    integers = torch.round(queries.double() * (2 ** (QUERY_BITS - 1) - 1)).long()
    twos = integers.numpy() & ((1 << QUERY_BITS) - 1)  # two's complement in QUERY_BITS bits
    bits = ((twos[:, None, :] >> np.arange(QUERY_BITS)[None, :, None]) & 1).astype(np.uint8)
    return np.ascontiguousarray(np.packbits(bits, axis=2)).view(np.uint64), integers


def plane_sums(kernel: PlaneKernel, packed: np.ndarray, planes: np.ndarray) -> np.ndarray:
    """Σ_i q_int,i·b_i of every row of ``packed`` [n, D/8] uint8 (its bits b) with every query's ``planes``
    (:func:`query_planes`): [n, Q] int64, exact."""
    out = np.empty((packed.shape[0], planes.shape[0]), dtype=np.int64)
    kernel(np.ascontiguousarray(packed).view(np.uint64), planes, PLANE_WEIGHTS, out)
    return out


@lru_cache(maxsize=1)
def plane_kernel() -> PlaneKernel | None:
    """The compiled kernel (numba compiles it on first use and caches it on disk), or None without numba."""
    try:
        from wherefrom.index.plane_kernel import plane_counts
    except (ImportError, RuntimeError):  # no numba, or numba finds no folder to cache the compiled kernel in
        return None
    return plane_counts
