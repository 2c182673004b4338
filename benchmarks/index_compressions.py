"""Compressions of a training gradient at a fixed number of bytes, compared by benchmarks/index_accuracy.py.

Each works on the gradient rotated into the EK-FAC eigenbasis, g̃ = Q_Sᵀ ∇L Q_A per layer (a rotation, so inner
products are those of the raw gradients), and on the preconditioned query p = q̃ ⊘ (Λ + λ), whose inner product
with g̃ over every entry is full EK-FAC's influence (Grosse et al. eq. 21). A compression maps both to D numbers;
the approximate influence is the inner product of the two short vectors.

- ``global``: wherefrom's index: the entries with the largest Λ/(Λ+λ) over all layers, float16 rows scaled to 1.
- ``per-layer``: the earlier index: the same number of entries in every layer, by largest Λ.
- ``global-int8``: the ``global`` entries, whitened (g̃/√(Λ+λ), query p·√(Λ+λ)) and stored as int8 with the row's
  float32 scale: twice the entries for the same bytes, coarser values.
- ``logra-pca``: LoGra with its PCA initialisation: per layer the block of the top k_S S-directions × top k_A
  A-directions (ranked by Λ's row and column sums), the same k in every layer.
- ``logra-random``: LoGra with random initialisation: per layer Gaussian P_S [k, out], P_A [k, in], storing
  P_S g̃ P_Aᵀ / k (equal in distribution to projecting the raw gradient, Q_S and Q_A being orthogonal).
- ``random``: a plain random projection of the whole model's gradient to D numbers (CountSketch: each entry added
  with a random sign to a random one of D buckets; a sparse Johnson-Lindenstrauss map, since a dense Gaussian
  matrix over millions of entries would not fit in memory).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

SCALE_BYTES = 4


@dataclass
class LayerBasis:
    """What the compressions know about one layer: Λ [out, in] and the default damping λ."""

    Lambda: torch.Tensor
    damping: float


def _float16_rows(rows: torch.Tensor) -> torch.Tensor:
    """Rows as the index stores them: divided by their largest magnitude, rounded to float16, scaled back."""
    scale = rows.abs().amax(1, keepdim=True).clamp_min(torch.finfo(torch.float32).tiny)
    return (rows / scale).half().float() * scale


def _int8_rows(rows: torch.Tensor) -> torch.Tensor:
    """Rows rounded to int8 after dividing by max|row| / 127, scaled back."""
    scale = rows.abs().amax(1, keepdim=True).clamp_min(torch.finfo(torch.float32).tiny) / 127
    return torch.round(rows / scale).clamp(-127, 127) * scale


Factors = dict[str, tuple[torch.Tensor, torch.Tensor]]  # per layer (Ds Q_S [B, T, out], ā Q_A [B, T, in])


class Compression:
    """Maps per-layer rotated gradients {name: [B, out, in]} (and their rotated rows, ``factors``) to rows [B, D];
    queries likewise (unrounded)."""

    def rows(self, rotated: dict[str, torch.Tensor], factors: Factors) -> torch.Tensor:
        raise NotImplementedError

    def queries(self, preconditioned: dict[str, torch.Tensor]) -> torch.Tensor:
        raise NotImplementedError


class Selection(Compression):
    """Kept entries per layer, optionally whitened and stored as int8."""

    def __init__(self, bases: dict[str, LayerBasis], kept: dict[str, torch.Tensor], int8: bool = False) -> None:
        self.kept, self.int8 = kept, int8
        self.root = {name: (b.Lambda.flatten()[kept[name]] + b.damping).sqrt() for name, b in bases.items()}

    def rows(self, rotated: dict[str, torch.Tensor], factors: Factors) -> torch.Tensor:
        parts = [g.flatten(1)[:, self.kept[name]] for name, g in rotated.items()]
        if self.int8:
            return _int8_rows(torch.cat([p / self.root[name] for p, name in zip(parts, rotated)], 1))
        return _float16_rows(torch.cat(parts, 1))

    def queries(self, preconditioned: dict[str, torch.Tensor]) -> torch.Tensor:
        parts = [p.flatten(1)[:, self.kept[name]] for name, p in preconditioned.items()]
        if self.int8:
            parts = [p * self.root[name] for p, name in zip(parts, preconditioned)]
        return torch.cat(parts, 1)


def importance(basis: LayerBasis) -> torch.Tensor:
    """Λ/(Λ+λ), flattened: wherefrom's criterion (src/wherefrom/index/projection.py)."""
    Lambda = basis.Lambda.flatten()
    return Lambda / (Lambda + basis.damping)


def global_selection(bases: dict[str, LayerBasis], values: int, int8: bool = False) -> Selection:
    scores = [importance(b) for b in bases.values()]
    kept_flat = torch.topk(torch.cat(scores), min(values, sum(map(len, scores))), sorted=False).indices
    kept, offset = {}, 0
    for name, s in zip(bases, scores):
        kept[name] = kept_flat[(kept_flat >= offset) & (kept_flat < offset + s.numel())].sort().values - offset
        offset += s.numel()
    return Selection(bases, kept, int8)


def per_layer_selection(bases: dict[str, LayerBasis], values: int) -> Selection:
    each = values // len(bases)
    return Selection(bases, {name: b.Lambda.flatten().argsort(descending=True)[:each].sort().values
                             for name, b in bases.items()})


def logra_pca(bases: dict[str, LayerBasis], values: int) -> Selection:
    kept = {}
    for name, b in bases.items():
        out, inn = b.Lambda.shape
        k_out, k_in = _kronecker_sides(values // len(bases), out, inn)
        rows = b.Lambda.sum(1).argsort(descending=True)[:k_out]
        cols = b.Lambda.sum(0).argsort(descending=True)[:k_in]
        kept[name] = (rows[:, None] * inn + cols[None, :]).flatten().sort().values
    return Selection(bases, kept)


def _kronecker_sides(per_layer: int, out: int, inn: int) -> tuple[int, int]:
    """k_out × k_in ≤ per_layer, as square as the layer's shape allows."""
    k = max(1, math.isqrt(per_layer))
    k_out, k_in = min(k, out), min(k, inn)
    if k_out < k:
        k_in = min(inn, per_layer // k_out)
    if k_in < k:
        k_out = min(out, per_layer // k_in)
    return k_out, k_in


class LograRandom(Compression):
    """Per layer P_S g̃ P_Aᵀ with Gaussian P_S [k_out, out], P_A [k_in, in], scaled so that E[inner product] is exact."""

    def __init__(self, bases: dict[str, LayerBasis], values: int, seed: int = 0) -> None:
        generator = torch.Generator().manual_seed(seed)
        self.P = {}
        for name, b in bases.items():
            out, inn = b.Lambda.shape
            k_out, k_in = _kronecker_sides(values // len(bases), out, inn)
            self.P[name] = (torch.randn(k_out, out, generator=generator) / math.sqrt(k_out),
                            torch.randn(k_in, inn, generator=generator) / math.sqrt(k_in))

    def rows(self, rotated: dict[str, torch.Tensor], factors: Factors) -> torch.Tensor:
        """Σ_t (P_S Ds_t)(P_A ā_t)ᵀ, from the rows: T·k·(out + in + k) per sequence instead of out·in·k."""
        return _float16_rows(torch.cat([torch.einsum("btk,btl->bkl", ds @ self.P[name][0].T, a @ self.P[name][1].T)
                                        .flatten(1) for name, (ds, a) in factors.items()], 1))

    def queries(self, preconditioned: dict[str, torch.Tensor]) -> torch.Tensor:
        return torch.cat([(self.P[name][0] @ m @ self.P[name][1].T).flatten(1) for name, m in preconditioned.items()], 1)


class CountSketch(Compression):
    """Every entry of every layer added, with a random sign, to one of ``values`` buckets."""

    def __init__(self, bases: dict[str, LayerBasis], values: int, seed: int = 0) -> None:
        generator = torch.Generator().manual_seed(seed)
        self.values = values
        self.bucket = {name: torch.randint(values, (b.Lambda.numel(),), generator=generator) for name, b in bases.items()}
        self.sign = {name: torch.randint(2, (b.Lambda.numel(),), generator=generator).float() * 2 - 1
                     for name, b in bases.items()}

    def _sketch(self, matrices: dict[str, torch.Tensor]) -> torch.Tensor:
        first = next(iter(matrices.values()))
        out = first.new_zeros(first.shape[0], self.values)
        for name, m in matrices.items():
            out.index_add_(1, self.bucket[name], m.flatten(1) * self.sign[name])
        return out

    def rows(self, rotated: dict[str, torch.Tensor], factors: Factors) -> torch.Tensor:
        return _float16_rows(self._sketch(rotated))

    def queries(self, preconditioned: dict[str, torch.Tensor]) -> torch.Tensor:
        return self._sketch(preconditioned)


METHODS = ("global", "per-layer", "global-int8", "logra-pca", "logra-random", "random")


def make(method: str, bases: dict[str, LayerBasis], bytes_per_sequence: int) -> Compression:
    """``method`` at ``bytes_per_sequence`` (values and the float32 row scale)."""
    float16_values = (bytes_per_sequence - SCALE_BYTES) // 2
    if method == "global":
        return global_selection(bases, float16_values)
    if method == "per-layer":
        return per_layer_selection(bases, float16_values)
    if method == "global-int8":
        return global_selection(bases, bytes_per_sequence - SCALE_BYTES, int8=True)
    if method == "logra-pca":
        return logra_pca(bases, float16_values)
    if method == "logra-random":
        return LograRandom(bases, float16_values)
    if method == "random":
        return CountSketch(bases, float16_values)
    raise ValueError(method)
