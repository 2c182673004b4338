"""The index's compression of each layer's gradient in the EK-FAC eigenbasis: a one-bit CountSketch of the whole
model's whitened gradient (``sketch``, the default; see sketch.py), or the entries that matter most for scores,
chosen over all layers together (``entries``).

In the Kronecker eigenbasis the influence is a weighted sum (Grosse et al. eq. 21 and 30):

    I(z, q) = Σ_ij  q̃_ij g̃_ij / (Λ_ij + λ),   q̃ = Q_Sᵀ ∇L_q Q_A,   g̃ = Q_Sᵀ ∇L_z Q_A.

Training gradients put about Λ_ij of their energy on entry ij (that is what Λ measures), so after the damped
inverse entry ij carries about Λ_ij / (Λ_ij + λ) of a score's scale: close to 1 where Λ ≫ λ, close to 0 where the
damping suppresses it anyway. That ratio is dimensionless, so it compares entries of different layers (λ is each
layer's own default damping); the index keeps the entries with the largest ratio over the whole model, so a
layer whose curvature is spread over many directions gets more of the budget than one with a few. Entries are
chosen one by one (not as a block of rows and columns) because EK-FAC's Λ is not a Kronecker product;
benchmarks/index_accuracy.py measures the alternatives at equal bytes: on a real model the curvature is flat and
the scores are spread over tens of millions of entries, where the sketch finds the top sequences far better.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any

import torch

from wherefrom.allocator import Workspace
from wherefrom.curvature.blocks import BlockDiagonal
from wherefrom.curvature.preconditioner import LayerCurvature
from wherefrom.engine.stream import sequence_products
from wherefrom.errors import WherefromError
from wherefrom.index.budget import BITS, RowLayout, row_layout
from wherefrom.index.sketch import count_sketch, layer_hashes

_DIGEST_VALUES = 4096  # values of each factor sampled into factors_digest
HASHES_KEPT = 1 << 24  # a sketched layer of at most this many entries keeps its hashes (80 MB at 5 bytes an entry)


@dataclass
class LayerProjection:
    """One layer's eigenbasis Q_S [out, out], Q_A [in(+1), in(+1)], Λ on the entries the index reads (flattened)
    and the default damping 0.1 × mean(Λ) of the whole layer; subclasses say which entries are read and how they
    become the layer's part of a row."""

    Q_S: torch.Tensor
    Q_A: torch.Tensor
    eigenvalues: torch.Tensor
    default_damping: float
    shares_row = False  # True: every layer's part spans the whole row, and the parts add up

    def to(self, device: torch.device) -> LayerProjection:
        """The same projection with its tensors on ``device`` (itself when they are there already, so that what it
        keeps, a sketch's hashes, lives on across the build's shards and a session's queries)."""
        if self.eigenvalues.device == torch.device(device):
            return self
        return replace(self, **{f.name: getattr(self, f.name).to(device) for f in fields(self)
                                if f.init and isinstance(getattr(self, f.name), torch.Tensor)})

    @property
    def size(self) -> int:
        """Numbers stored per sequence for this layer."""
        raise NotImplementedError

    def read(self, rotated: torch.Tensor) -> torch.Tensor:
        """The entries the index reads of flat rotated gradients [B, out·in(+1)]."""
        raise NotImplementedError

    def add_encoded(self, read: torch.Tensor, rows: torch.Tensor, workspace: Workspace | None = None) -> None:
        """Add the training sequences' part of their rows, from their read entries g̃, into ``rows`` [B, size] (in
        place: a sketch adds every layer into the same buckets, and a [B, size] temporary per layer cost 3 times
        the sketch itself on the demo's layers; benchmarks/results/index-build.md), its temporaries in
        ``workspace``'s buffers when given (reused batch after batch)."""
        raise NotImplementedError

    def encode_query(self, preconditioned: torch.Tensor) -> torch.Tensor:
        """A query's part from its read entries of q̃ ⊘ (Λ + λ), so that its dot product with what
        :meth:`add_encoded` adds is the influence (or, for a sketch, an unbiased estimate of it): [Q, size]."""
        raise NotImplementedError

    def tensors(self) -> dict[str, torch.Tensor]:
        """What projections.safetensors holds of this layer: what its run's factors do not (Q_S, Q_A and Λ are read
        from the run, see :func:`from_run`)."""
        return {}

    def manifest_fields(self) -> dict[str, int]:
        """What the manifest's entry for this layer holds beyond its name, size, columns and damping."""
        return {}

    def rotate(self, ds: torch.Tensor, a: torch.Tensor, workspace: Workspace | None = None) -> torch.Tensor:
        """Q_Sᵀ (Σ_t Ds_t ā_tᵀ) Q_A for each row of the batch, every entry: [B, out, in(+1)] (in ``workspace``'s
        buffer when given)."""
        return sequence_products(ds @ self.Q_S.to(ds.dtype), a @ self.Q_A.to(a.dtype), workspace, "rotated")

    def add_to_rows(self, rotated: torch.Tensor, rows: torch.Tensor, workspace: Workspace | None = None) -> None:
        """Add the layer's part of the rows of rotated training gradients [B, out, in(+1)] into ``rows`` [B, size]."""
        self.add_encoded(self.read(rotated.flatten(1)), rows, workspace)

    def precondition(self, ds: torch.Tensor, a: torch.Tensor, damping: float | None) -> torch.Tensor:
        """The query's part of a row: from (G + λI)⁻¹ ∇L_q in the eigenbasis, q̃ ⊘ (Λ + λ): [Q, size] float32."""
        lambda_ = self.default_damping if damping is None else damping
        read = self.read(self.rotate(ds.float(), a.float()).flatten(1))
        return self.encode_query(read / (self.eigenvalues.float() + lambda_))


@dataclass
class KeptEntries(LayerProjection):
    """The ``entries`` compression: the layer's kept entries of g̃ (flat indices into [out, in(+1)]) as they are."""

    entries: torch.Tensor

    @property
    def size(self) -> int:
        return int(self.entries.numel())

    def read(self, rotated: torch.Tensor) -> torch.Tensor:
        return rotated[:, self.entries]

    def add_encoded(self, read: torch.Tensor, rows: torch.Tensor, workspace: Workspace | None = None) -> None:
        rows += read

    def encode_query(self, preconditioned: torch.Tensor) -> torch.Tensor:
        return preconditioned

    def tensors(self) -> dict[str, torch.Tensor]:
        return {"entries": self.entries}


@dataclass
class SketchedEntries(LayerProjection):
    """The ``sketch`` compression: every entry of the whitened gradient g̃ ⊘ √(Λ+λ₀), CountSketched with the layer's
    ``seed`` into the row's ``buckets``, which all layers share (λ₀: the default damping; sketch.py)."""

    buckets: int
    seed: int
    shares_row = True
    _hashes: tuple[torch.Tensor, torch.Tensor] | None = field(default=None, init=False, repr=False, compare=False)

    @property
    def size(self) -> int:
        return self.buckets

    def _layer_hashes(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        """The layer's buckets and signs, hashed once and kept while the projection lives (every batch of the
        build, every query of a session) when the layer has at most HASHES_KEPT entries; larger layers hash each
        time rather than hold 5 bytes an entry."""
        n = self.eigenvalues.numel()
        if self._hashes is None and n <= HASHES_KEPT:
            self._hashes = layer_hashes(n, self.buckets, self.seed, self.eigenvalues.device)
        return self._hashes

    def _root(self) -> torch.Tensor:
        return (self.eigenvalues.float() + self.default_damping).sqrt()

    def read(self, rotated: torch.Tensor) -> torch.Tensor:
        return rotated

    def add_encoded(self, read: torch.Tensor, rows: torch.Tensor, workspace: Workspace | None = None) -> None:
        workspace = workspace or Workspace(read.device)
        root = workspace.get("√(Λ+λ₀)", tuple(self.eigenvalues.shape), torch.float32)
        torch.add(self.eigenvalues, self.default_damping, out=root).sqrt_()
        whitened = workspace.get("g̃ ⊘ √(Λ+λ₀)", tuple(read.shape), torch.float32)
        torch.div(read, root, out=whitened)
        count_sketch(whitened, self.buckets, self.seed, self._layer_hashes(), out=rows, workspace=workspace)

    def encode_query(self, preconditioned: torch.Tensor) -> torch.Tensor:
        return count_sketch(preconditioned * self._root(), self.buckets, self.seed, self._layer_hashes())

    def manifest_fields(self) -> dict[str, int]:
        return {"seed": self.seed}


def entry_importance(curvature: LayerCurvature) -> torch.Tensor:
    """Λ_ij / (Λ_ij + λ) for every entry of a layer's eigenbasis, flattened, with λ the layer's default damping."""
    Lambda = curvature.eigenvalues.flatten().float()
    return Lambda / (Lambda + curvature.damping(None))


def choose_projections(curvatures: dict[str, LayerCurvature], budget: str,
                       compression: str) -> tuple[RowLayout, dict[str, LayerProjection]]:
    """The row ``budget`` buys with ``compression``, and each layer's part of it: for ``sketch``, every entry of every
    layer hashed into the row's buckets; for ``entries``, the entries with the largest Λ/(Λ+λ) over all layers (a
    layer may keep none). A budget that holds every entry in float32 keeps every entry as it is, whatever
    ``compression``: the index is then full EK-FAC."""
    for name, curvature in curvatures.items():
        if curvature.eigenvalues is None or curvature.Q_S is None or curvature.Q_A is None:
            raise WherefromError(f"layer {name}: a gradient index needs an eigenbasis; fit the run with "
                                 "--strategy ekfac or kfac.")
    importance = [entry_importance(c) for c in curvatures.values()]
    layout = row_layout(budget, sum(i.numel() for i in importance), compression)
    if layout.dtype == BITS:
        return layout, {name: from_run(c, {"size": layout.values, "seed": seed}, "sketch", {})
                        for seed, (name, c) in enumerate(curvatures.items())}
    kept = torch.topk(torch.cat(importance), layout.values, sorted=False).indices
    projections, offset = {}, 0
    for (name, curvature), layer_importance in zip(curvatures.items(), importance):
        n = layer_importance.numel()
        entries = kept[(kept >= offset) & (kept < offset + n)].sort().values - offset
        projections[name] = from_run(curvature, {}, "entries", {"entries": entries})
        offset += n
    return layout, projections


def from_run(curvature: LayerCurvature, entry: dict[str, Any], compression: str, stored: dict[str, torch.Tensor]
             ) -> LayerProjection:
    """A layer's projection from its run's curvature (Q_S, Q_A, Λ and the default damping), the index manifest's
    ``entry`` for the layer (a sketch's buckets, ``size``, and hash ``seed``) and what the index ``stored`` of it
    (the kept entries)."""
    Q_S, Q_A = _basis(curvature)
    eigenvalues, damping = curvature.eigenvalues.flatten().float(), curvature.damping(None)
    if compression == "sketch":
        return SketchedEntries(Q_S, Q_A, eigenvalues.contiguous(), damping, buckets=entry["size"], seed=entry["seed"])
    return KeptEntries(Q_S, Q_A, eigenvalues[stored["entries"]].contiguous(), damping, entries=stored["entries"])


def factors_digest(curvatures: Mapping[str, LayerCurvature]) -> str:
    """A fingerprint of the run's factors that the index reads (every layer's Q_S, Q_A and Λ): SHA-256 of their
    names, shapes and 4,096 evenly spaced values of each. A refitted run differs in nearly every value (an
    eigenvector's sign alone is arbitrary), so a sample sees it, in milliseconds instead of hashing every byte."""
    digest = hashlib.sha256()
    for name, curvature in curvatures.items():
        for part in (*_basis(curvature), curvature.eigenvalues):
            flat = part.detach().flatten().float().cpu()
            sample = flat[torch.linspace(0, flat.numel() - 1, min(flat.numel(), _DIGEST_VALUES)).long()]
            digest.update(f"{name}{tuple(part.shape)}".encode())
            digest.update(sample.numpy().tobytes())
    return digest.hexdigest()[:16]


def layer_columns(projections: dict[str, LayerProjection]) -> dict[str, tuple[int, int]]:
    """Where each layer's part lies in a row: kept entries side by side in the projections' order; a sketch's
    layers all over the row."""
    columns, start = {}, 0
    for name, projection in projections.items():
        columns[name] = (0, projection.size) if projection.shares_row else (start, start + projection.size)
        start = columns[name][1]
    return columns


def _basis(curvature: LayerCurvature) -> tuple[torch.Tensor, torch.Tensor]:
    Q_S, Q_A = (Q.dense() if isinstance(Q, BlockDiagonal) else Q for Q in (curvature.Q_S, curvature.Q_A))
    return Q_S.contiguous(), Q_A.contiguous()
