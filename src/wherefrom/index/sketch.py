"""The index's sketch: the whole model's whitened gradient, CountSketched into one-bit buckets.

In the Kronecker eigenbasis an influence is Σ_ij q̃_ij g̃_ij / (Λ_ij + λ) (Grosse et al. eq. 21). Split the weight
symmetrically, w = g̃ ⊘ √(Λ+λ₀) for the training sequence and w_q = q̃ ⊘ (Λ+λ) ∘ √(Λ+λ₀) for the query, and the
score is the plain inner product ⟨w_q, w⟩ over every entry of every layer. By construction of EK-FAC, Λ_ij is the
mean of g̃_ij² over training sequences, so every entry of w has about the same scale (E[w_ij²] = Λ/(Λ+λ₀) ≤ 1):
nothing singles out a few entries, and a random projection suits it. A CountSketch (Charikar et al. 2002) adds
each entry, with a random sign, into one of D buckets; ⟨S w_q, S w⟩ is an unbiased estimate of ⟨w_q, w⟩ with a
standard deviation of about ‖w_q‖‖w‖/√D. Every layer's entries go into the same D buckets (each layer with its
own hash), so a bucket sums entries of the whole model and is close to Gaussian, with the same spread in every
bucket of a row. The row keeps one bit per bucket, its sign, and one float32 scale: for jointly Gaussian (x, y),
E[x·sign(y)] = √(2/π)·E[xy]/σ_y, so σ√(π/2)·Σ_i x_i sign(y_i) (σ: the row's root mean square) is an unbiased
estimate of ⟨x, y⟩ from the signs alone, with only π/2 times the variance per bucket of exact values, while a
byte holds 8 buckets instead of one int8 or half a float16: at equal bytes the sketch's error is about 2.3 times
smaller than in int8 (measured in docs/index.md). Bucket and sign of an entry come from a hash of its position
and the layer's seed, computed when needed, so nothing of size out × in is stored for them.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from wherefrom.allocator import Workspace

_MASK32 = 0xFFFFFFFF
_CHUNK = 1 << 22  # entries hashed and added at a time (bounds the temporaries)


def _mix32(x: torch.Tensor) -> torch.Tensor:
    """murmur3's 32-bit finaliser, elementwise on int64 values below 2^32: an avalanche hash of each value."""
    x = x ^ (x >> 16)
    x = (x * 0x85EBCA6B) & _MASK32
    x = x ^ (x >> 13)
    x = (x * 0xC2B2AE35) & _MASK32
    return x ^ (x >> 16)


def buckets_and_signs(first: int, last: int, buckets: int, seed: int, device: torch.device
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """The bucket (int64 in [0, buckets)) and sign (±1.0) of the layer's flat entries first..last-1."""
    position = torch.arange(first, last, dtype=torch.int64, device=device)
    bucket = _mix32((position ^ (seed * 0x9E3779B1)) & _MASK32) % buckets
    sign = (_mix32((position ^ (seed * 0x85EBCA77 + 0x165667B1)) & _MASK32) & 1).float() * 2 - 1
    return bucket, sign


def count_sketch(values: torch.Tensor, buckets: int, seed: int,
                 hashes: tuple[torch.Tensor, torch.Tensor] | None = None,
                 out: torch.Tensor | None = None, workspace: Workspace | None = None) -> torch.Tensor:
    """S·v for each row of ``values`` [B, n] (a layer's flat entries): [B, buckets] float32, added into ``out``
    when given (the rows being built: no temporary of the rows' size per layer). ``hashes``: the layer's buckets
    and signs from :func:`layer_hashes`, if kept (else they are computed a chunk at a time); ``workspace``: where
    the temporaries go (reused batch after batch)."""
    out = values.new_zeros(values.shape[0], buckets, dtype=torch.float32) if out is None else out
    if buckets == 0:
        return out
    if hashes is not None:  # kept as int32 for memory; index_add_ is many times slower with an int32 index
        workspace = workspace or Workspace(values.device)
        index = workspace.get("buckets", tuple(hashes[0].shape), torch.int64)
        signed = workspace.get("signed", tuple(values.shape), torch.float32)
        return out.index_add_(1, index.copy_(hashes[0]), torch.mul(values, hashes[1], out=signed))
    for first in range(0, values.shape[1], _CHUNK):
        last = min(first + _CHUNK, values.shape[1])
        bucket, sign = buckets_and_signs(first, last, buckets, seed, values.device)
        out.index_add_(1, bucket, values[:, first:last].float() * sign)
    return out


def layer_hashes(n: int, buckets: int, seed: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """All of a layer's buckets (int32) and signs (int8), 5 bytes an entry, to keep instead of hashing again."""
    bucket, sign = buckets_and_signs(0, n, buckets, seed, device)
    return bucket.to(torch.int32), sign.to(torch.int8)


SIGN_GAIN = math.sqrt(math.pi / 2)  # E[|y|] = σ·√(2/π) for a Gaussian y: the gain that makes signs unbiased


def sign_bits(rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows [B, D] (D a multiple of 8) as their signs, packed 8 to a byte, most significant bit first ([B, D/8]
    uint8), and each row's scale √(π/2)·RMS [B] float32, so that scale·Σ_i x_i·(±1)_i estimates ⟨x, row⟩."""
    bits = (rows > 0).to(torch.uint8).view(rows.shape[0], -1, 8)
    weights = torch.tensor([128, 64, 32, 16, 8, 4, 2, 1], dtype=torch.uint8, device=rows.device)
    packed = (bits * weights).sum(-1, dtype=torch.uint8)
    # RMS from the norms of the same groups of 8 (a float32 sum of 8 squares, then of their sums: as close to a
    # float64 sum as a pairwise one, without a squared copy of the rows)
    groups = torch.linalg.vector_norm(rows.float().view(rows.shape[0], -1, 8), dim=2)
    scale = groups.square_().mean(1).sqrt_() * (SIGN_GAIN / math.sqrt(8))
    return packed, scale


def unpack_signs(packed: torch.Tensor) -> torch.Tensor:
    """[n, D/8] uint8 → [n, D] int8 bits 0/1 (1: a positive bucket), in the order :func:`sign_bits` packed them
    (on the host by numpy's table-driven unpackbits, about 10 times faster there than shifting tensors)."""
    if packed.device.type == "cpu":
        return torch.from_numpy(np.unpackbits(packed.numpy(), axis=1)).view(torch.int8)
    return unpack_by_shifts(packed)


def unpack_by_shifts(packed: torch.Tensor) -> torch.Tensor:
    """:func:`unpack_signs` with tensor shifts, on any device (what a GPU runs)."""
    shifts = torch.arange(7, -1, -1, dtype=torch.uint8, device=packed.device)
    return ((packed.unsqueeze(-1) >> shifts) & 1).view(packed.shape[0], -1).view(torch.int8)
