"""The compiled loop of bitplanes.py (imported only when numba is installed): for every row, Σ_p weight_p ·
popcount(plane_p AND row) over its 64-bit words, each query's planes reading the row a block at a time."""

from __future__ import annotations

import numba
import numpy as np
from numba import types
from numba.extending import intrinsic

BLOCK_WORDS = 1024  # 8 KB of a row: it stays in the core's cache while every plane of every query reads it


@intrinsic
def _popcount(typingctx, word):
    """LLVM's population count of a 64-bit word (vectorised in the loop below where the CPU has one)."""
    def codegen(context, builder, signature, args):
        return builder.call(builder.module.declare_intrinsic("llvm.ctpop", [args[0].type]), args)
    return types.uint64(types.uint64), codegen


@numba.njit(nogil=True, boundscheck=False, cache=True)
def _and_popcount(a, b):
    count = np.uint64(0)
    for i in range(a.shape[0]):
        count += _popcount(a[i] & b[i])
    return count


@numba.njit(nogil=True, boundscheck=False, cache=True)
def plane_counts(words, planes, weights, out):
    """words [n, W] uint64 (rows), planes [Q, P, W] uint64, weights [P] int64 → out [n, Q] int64."""
    n, n_words = words.shape
    for r in range(n):
        row = words[r]
        for q in range(planes.shape[0]):
            out[r, q] = 0
        for first in range(0, n_words, BLOCK_WORDS):
            last = min(first + BLOCK_WORDS, n_words)
            block = row[first:last]
            for q in range(planes.shape[0]):
                for p in range(planes.shape[1]):
                    out[r, q] += weights[p] * np.int64(_and_popcount(block, planes[q, p, first:last]))
