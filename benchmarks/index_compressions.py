"""Compressions of a training gradient at a fixed number of bytes, compared by benchmarks/index_accuracy.py.

Each works on the gradient rotated into the EK-FAC eigenbasis, g̃ = Q_Sᵀ ∇L Q_A per layer (a rotation, so inner
products are those of the raw gradients), and on the preconditioned query p = q̃ ⊘ (Λ + λ), whose inner product
with g̃ over every entry is full EK-FAC's influence (Grosse et al. eq. 21). A compression maps both to D numbers;
the approximate influence is the inner product of the two short vectors. Some work on the whitened pair
w = g̃ ⊘ √(Λ+λ) and w_q = p ∘ √(Λ+λ), whose inner product is the same score, but whose entries are all of the
same scale (E[w_ij²] = Λ_ij/(Λ_ij+λ) ≤ 1 over training sequences), which is what a random projection needs.

- ``global``: wherefrom's index: the entries with the largest Λ/(Λ+λ) over all layers, float16 rows scaled to 1.
- ``per-layer``: the earlier index: the same number of entries in every layer, by largest Λ.
- ``global-int8``: the ``global`` entries, whitened and stored as int8 with the row's float32 scale: twice the
  entries for the same bytes, coarser values.
- ``logra-pca``: LoGra with its PCA initialisation: per layer the block of the top k_S S-directions × top k_A
  A-directions (ranked by Λ's row and column sums), the same k in every layer.
- ``logra-random``: LoGra with random initialisation: per layer Gaussian P_S [k, out], P_A [k, in], storing
  P_S g̃ P_Aᵀ / k (equal in distribution to projecting the raw gradient, Q_S and Q_A being orthogonal).
- ``random``: a plain random projection of the whole model's whitened gradient (CountSketch: each entry added
  with a random sign to a random one of D buckets; a sparse Johnson-Lindenstrauss map, since a dense Gaussian
  matrix over tens of millions of entries would not fit in memory); ``random-int8`` stores it as int8.
- ``random-Nbit`` (N = 1, 2, 4): the CountSketch stored as N-bit codes: each bucket divided by the row's root
  mean square σ (the row's float32 scale) and rounded to the nearest of the 2^N Lloyd-Max levels of a unit
  Gaussian (for 1 bit: its sign). The query stays in float32 (an asymmetric estimator): for jointly Gaussian
  bucket pairs E[w_q,i·Q(x_i/σ)] = E[w_q,i·x_i]·η/σ with η = E[Q(X)²], so σ·Q(x/σ)/η is an unbiased stand-in
  for x. Coarser values, many more buckets: at equal bytes 1 bit holds 8 times int8's buckets, and its noise
  per bucket is only 1/η = π/2 times that of exact values (2 bits: 1.13, 4 bits: 1.01).
- ``sketch``: wherefrom's index as shipped (``--compression sketch``, src/wherefrom/index/sketch.py): each layer
  hashed straight into the row's buckets by the index's own code, signs kept with √(π/2)·RMS as the scale. It
  is ``random-1bit`` without the fine buckets' extra collisions; slower to run here (a scatter per budget).
- ``global+random``: the entries with the largest Λ/(Λ+λ), whitened, exactly, and a CountSketch of the whitened
  remainder (every other entry) in the rest of the bytes; ``global+random-int8`` stores both parts as int8 (a
  float32 scale per part). The suffix ``@f`` gives the share f of the values kept exactly (default 0.5).

The CountSketch is computed in two steps so that every budget shares one pass over the entries: each layer's
signed entries are added to a fine sketch of FINE buckets at a random offset (entries of one layer never collide
there), and each budget's D buckets are a random map of the fine buckets. Two entries then share a bucket with
probability 1/FINE + 1/D instead of 1/D.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from wherefrom.index.budget import row_layout
from wherefrom.index.projection import SketchedEntries
from wherefrom.index.sketch import sign_bits, unpack_signs

SCALE_BYTES = 4
FINE = 1 << 23


@dataclass
class LayerBasis:
    """What the compressions know about one layer: Λ [out, in] and the default damping λ."""

    Lambda: torch.Tensor
    damping: float
    root: torch.Tensor = field(init=False)  # √(Λ+λ), flattened

    def __post_init__(self) -> None:
        self.root = (self.Lambda.flatten().double() + self.damping).sqrt().float()


@dataclass
class Layer:
    """One layer of a batch of training gradients (or of the queries): the rotated gradient g [B, out·in] (for
    queries: the preconditioned p), its whitened form w, and for training gradients the rotated rows (Ds Q_S,
    ā Q_A)."""

    name: str
    g: torch.Tensor
    w: torch.Tensor
    ds: torch.Tensor | None = None
    a: torch.Tensor | None = None


def _round_rows(rows: torch.Tensor, int8: bool) -> torch.Tensor:
    """Rows as an index would store them: divided by their largest magnitude (int8: by max/127), rounded to
    float16 (int8), scaled back."""
    scale = rows.abs().amax(1, keepdim=True).clamp_min(torch.finfo(torch.float32).tiny)
    if int8:
        scale = scale / 127
        return torch.round(rows / scale).clamp(-127, 127) * scale
    return (rows / scale).half().float() * scale


def lloyd_max(bits: int, iterations: int = 200) -> tuple[torch.Tensor, torch.Tensor]:
    """The 2^bits levels of the mean-square-optimal quantiser of a unit Gaussian and the thresholds between them
    (Lloyd's algorithm on the exact density: thresholds halfway between levels, levels the centroids of their
    cells)."""
    normal = torch.distributions.Normal(torch.tensor(0.0, dtype=torch.float64), 1.0)
    levels = torch.linspace(-2.0, 2.0, 2**bits, dtype=torch.float64)
    for _ in range(iterations):
        thresholds = (levels[1:] + levels[:-1]) / 2
        edges = torch.cat([torch.tensor([-math.inf]), thresholds, torch.tensor([math.inf])]).double()
        density = normal.log_prob(edges.clamp(-40, 40)).exp()
        mass = normal.cdf(edges[1:]) - normal.cdf(edges[:-1])
        levels = (density[:-1] - density[1:]) / mass
    return levels.float(), ((levels[1:] + levels[:-1]) / 2).float()


def _quantise_rows(rows: torch.Tensor, bits: int) -> torch.Tensor:
    """Rows as N-bit codes would store them: the nearest Lloyd-Max level of rows/σ (σ: the row's root mean
    square), then σ·level/η with η = E[level²], the unbiased stand-in for the asymmetric inner product."""
    levels, thresholds = lloyd_max(bits)
    normal = torch.distributions.Normal(0.0, 1.0)
    edges = torch.cat([torch.tensor([-math.inf]), thresholds, torch.tensor([math.inf])])
    eta = float((levels**2 * (normal.cdf(edges[1:]) - normal.cdf(edges[:-1]))).sum())
    sigma = rows.pow(2).mean(1, keepdim=True).sqrt().clamp_min(torch.finfo(torch.float32).tiny)
    codes = torch.bucketize((rows / sigma).contiguous(), thresholds)
    return levels[codes] * sigma / eta


class FineSketch:
    """Each layer's entries, times a random sign, added to FINE buckets starting at a random offset."""

    def __init__(self, bases: dict[str, LayerBasis], seed: int = 0) -> None:
        generator = torch.Generator().manual_seed(seed)
        self.offset = {name: int(torch.randint(FINE, (1,), generator=generator)) for name in bases}
        self.sign = {name: torch.randint(2, (b.Lambda.numel(),), generator=generator).float() * 2 - 1
                     for name, b in bases.items()}

    def buckets(self, name: str, entries: torch.Tensor) -> torch.Tensor:
        """Fine buckets of a layer's flat entries."""
        return (entries + self.offset[name]) % FINE

    def add(self, layer: Layer, fine: torch.Tensor) -> None:
        """Add the layer's signed whitened entries to ``fine`` [B, FINE]."""
        signed = layer.w * self.sign[layer.name]
        n, start = signed.shape[1], self.offset[layer.name]
        head = min(n, FINE - start)
        fine[:, start:start + head] += signed[:, :head]
        fine[:, :n - head] += signed[:, head:]


class Compression:
    """Maps per-layer gradients to rows [B, values]: :meth:`layer` writes each layer's part (unrounded) as the
    stream reaches it, :meth:`finish` completes and rounds the batch's rows; queries go through
    :meth:`query_layer` and :meth:`finish` unrounded."""

    values: int

    def layer(self, layer: Layer, rows: torch.Tensor) -> None:
        raise NotImplementedError

    def query_layer(self, layer: Layer, rows: torch.Tensor) -> None:
        self.layer(layer, rows)

    def finish(self, rows: torch.Tensor, fine: torch.Tensor, rounded: bool = True) -> torch.Tensor:
        return rows


def _columns(kept: dict[str, torch.Tensor], start: int = 0) -> dict[str, tuple[int, int]]:
    columns = {}
    for name, entries in kept.items():
        columns[name] = (start, start + entries.numel())
        start += entries.numel()
    return columns


class Selection(Compression):
    """Kept entries per layer: g̃ in float16 (whitened=False), or w in float16 or int8."""

    def __init__(self, kept: dict[str, torch.Tensor], whitened: bool = False, int8: bool = False) -> None:
        self.kept, self.whitened, self.int8 = kept, whitened, int8
        self.columns = _columns(kept)
        self.values = sum(k.numel() for k in kept.values())

    def layer(self, layer: Layer, rows: torch.Tensor) -> None:
        lo, hi = self.columns[layer.name]
        rows[:, lo:hi] = (layer.w if self.whitened else layer.g)[:, self.kept[layer.name]]

    def finish(self, rows: torch.Tensor, fine: torch.Tensor, rounded: bool = True) -> torch.Tensor:
        return _round_rows(rows, self.int8) if rounded else rows


class KeptAndSketch(Compression):
    """The whitened kept entries, then a CountSketch of the whitened remainder into ``sketch`` buckets; each part
    rounded with its own scale (float16 or int8)."""

    def __init__(self, kept: dict[str, torch.Tensor], sketch: int, fine: FineSketch, int8: bool,
                 seed: int = 1, bits: int | None = None) -> None:
        self.kept, self.sketch, self.int8, self.bits = kept, sketch, int8, bits
        self.columns = _columns(kept)
        self.n_kept = sum(k.numel() for k in kept.values())
        self.values = self.n_kept + sketch
        generator = torch.Generator().manual_seed(seed * 1_000_003 + sketch)
        self.coarse = torch.randint(sketch, (FINE,), generator=generator)
        # where each kept entry went in the sketch, and with which sign, to take it out again
        self.kept_buckets = {name: self.coarse[fine.buckets(name, entries)] for name, entries in kept.items()}
        self.kept_signs = {name: fine.sign[name][entries] for name, entries in kept.items()}

    def layer(self, layer: Layer, rows: torch.Tensor) -> None:
        entries = self.kept[layer.name]
        if entries.numel() == 0:
            return
        lo, hi = self.columns[layer.name]
        values = layer.w[:, entries]
        rows[:, lo:hi] = values
        rows[:, self.n_kept:].index_add_(1, self.kept_buckets[layer.name], -values * self.kept_signs[layer.name])

    def finish(self, rows: torch.Tensor, fine: torch.Tensor, rounded: bool = True) -> torch.Tensor:
        rows[:, self.n_kept:].index_add_(1, self.coarse, fine)
        if not rounded:
            return rows
        if self.bits is not None:
            return _quantise_rows(rows, self.bits)
        return torch.cat([_round_rows(part, self.int8) for part in (rows[:, :self.n_kept], rows[:, self.n_kept:])
                          if part.shape[1]], 1)


def importance(basis: LayerBasis) -> torch.Tensor:
    """Λ/(Λ+λ), flattened: wherefrom's criterion (src/wherefrom/index/projection.py)."""
    Lambda = basis.Lambda.flatten()
    return Lambda / (Lambda + basis.damping)


def global_entries(bases: dict[str, LayerBasis], values: int) -> dict[str, torch.Tensor]:
    """The ``values`` entries with the largest Λ/(Λ+λ) over all layers, per layer (sorted flat indices)."""
    scores = [importance(b) for b in bases.values()]
    kept_flat = torch.topk(torch.cat(scores), min(values, sum(map(len, scores))), sorted=False).indices
    kept, offset = {}, 0
    for name, s in zip(bases, scores):
        kept[name] = kept_flat[(kept_flat >= offset) & (kept_flat < offset + s.numel())].sort().values - offset
        offset += s.numel()
    return kept


def per_layer_entries(bases: dict[str, LayerBasis], values: int) -> dict[str, torch.Tensor]:
    each = values // len(bases)
    return {name: b.Lambda.flatten().argsort(descending=True)[:each].sort().values for name, b in bases.items()}


def logra_pca_entries(bases: dict[str, LayerBasis], values: int) -> dict[str, torch.Tensor]:
    kept = {}
    for name, b in bases.items():
        out, inn = b.Lambda.shape
        k_out, k_in = _kronecker_sides(values // len(bases), out, inn)
        rows = b.Lambda.sum(1).argsort(descending=True)[:k_out]
        cols = b.Lambda.sum(0).argsort(descending=True)[:k_in]
        kept[name] = (rows[:, None] * inn + cols[None, :]).flatten().sort().values
    return kept


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
        self.P, self.columns, start = {}, {}, 0
        for name, b in bases.items():
            out, inn = b.Lambda.shape
            k_out, k_in = _kronecker_sides(values // len(bases), out, inn)
            self.P[name] = (torch.randn(k_out, out, generator=generator) / math.sqrt(k_out),
                            torch.randn(k_in, inn, generator=generator) / math.sqrt(k_in))
            self.columns[name] = (start, start + k_out * k_in)
            start += k_out * k_in
        self.values = start

    def layer(self, layer: Layer, rows: torch.Tensor) -> None:
        """Σ_t (P_S Ds_t)(P_A ā_t)ᵀ, from the rows: T·k·(out + in + k) per sequence instead of out·in·k."""
        P_S, P_A = self.P[layer.name]
        lo, hi = self.columns[layer.name]
        rows[:, lo:hi] = torch.einsum("btk,btl->bkl", layer.ds @ P_S.T, layer.a @ P_A.T).flatten(1)

    def finish(self, rows: torch.Tensor, fine: torch.Tensor, rounded: bool = True) -> torch.Tensor:
        return _round_rows(rows, False) if rounded else rows

    def query_layer(self, layer: Layer, rows: torch.Tensor) -> None:
        P_S, P_A = self.P[layer.name]
        lo, hi = self.columns[layer.name]
        rows[:, lo:hi] = (P_S @ layer.g.view(-1, P_S.shape[1], P_A.shape[1]) @ P_A.T).flatten(1)


class ShippedSketch(Compression):
    """wherefrom's own sketch: the index's SketchedEntries for every layer, summed, and its sign bits."""

    def __init__(self, bases: dict[str, LayerBasis], buckets: int) -> None:
        self.values = buckets
        empty = torch.zeros(0)
        self.layers = {name: SketchedEntries(empty, empty, b.Lambda.flatten().float(), b.damping, buckets=buckets,
                                             seed=seed) for seed, (name, b) in enumerate(bases.items())}

    def layer(self, layer: Layer, rows: torch.Tensor) -> None:
        self.layers[layer.name].add_encoded(layer.g, rows)

    def query_layer(self, layer: Layer, rows: torch.Tensor) -> None:
        rows += self.layers[layer.name].encode_query(layer.g)

    def finish(self, rows: torch.Tensor, fine: torch.Tensor, rounded: bool = True) -> torch.Tensor:
        if not rounded:
            return rows
        packed, scale = sign_bits(rows)
        return (unpack_signs(packed).float() * 2 - 1) * scale[:, None]


METHODS = ("global", "per-layer", "global-int8", "logra-pca", "logra-random", "random", "random-int8",
           "random-1bit", "random-2bit", "random-4bit", "sketch", "global+random", "global+random-int8", "global+random@0.25")


def make(method: str, bases: dict[str, LayerBasis], bytes_per_sequence: int, fine: FineSketch) -> Compression:
    """``method`` at ``bytes_per_sequence`` (values and a float32 scale per stored part)."""
    float16_values = (bytes_per_sequence - SCALE_BYTES) // 2
    if method == "global":
        return Selection(global_entries(bases, float16_values))
    if method == "per-layer":
        return Selection(per_layer_entries(bases, float16_values))
    if method == "global-int8":
        return Selection(global_entries(bases, bytes_per_sequence - SCALE_BYTES), whitened=True, int8=True)
    if method == "logra-pca":
        return Selection(logra_pca_entries(bases, float16_values))
    if method == "logra-random":
        return LograRandom(bases, float16_values)
    if method in ("random", "random-int8"):
        int8 = method.endswith("int8")
        values = (bytes_per_sequence - SCALE_BYTES) // (1 if int8 else 2)
        return KeptAndSketch({name: torch.zeros(0, dtype=torch.long) for name in bases}, values, fine, int8)
    if method == "sketch":
        return ShippedSketch(bases, row_layout(f"{bytes_per_sequence}B", 10**12, "sketch").values)
    if method.startswith("random-") and method.endswith("bit"):
        bits = int(method.removeprefix("random-").removesuffix("bit"))
        values = (bytes_per_sequence - SCALE_BYTES) * 8 // bits
        return KeptAndSketch({name: torch.zeros(0, dtype=torch.long) for name in bases}, values, fine, False,
                             bits=bits)
    if method.startswith("global+random"):
        name, _, share = method.partition("@")
        int8 = name.endswith("int8")
        values = (bytes_per_sequence - 2 * SCALE_BYTES) // (1 if int8 else 2)
        kept = int(values * float(share or 0.5))
        return KeptAndSketch(global_entries(bases, kept), values - kept, fine, int8)
    raise ValueError(method)
