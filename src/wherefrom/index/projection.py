"""The index's compression: the entries of each layer's rotated gradient that matter most for scores, chosen over
all layers together.

In the Kronecker eigenbasis the influence is a weighted sum (Grosse et al. eq. 21 and 30):

    I(z, q) = Σ_ij  q̃_ij g̃_ij / (Λ_ij + λ),   q̃ = Q_Sᵀ ∇L_q Q_A,   g̃ = Q_Sᵀ ∇L_z Q_A.

Training gradients put about Λ_ij of their energy on entry ij (that is what Λ measures), so after the damped
inverse entry ij carries about Λ_ij / (Λ_ij + λ) of a score's scale: close to 1 where Λ ≫ λ, close to 0 where the
damping suppresses it anyway. That ratio is dimensionless, so it compares entries of different layers (λ is each
layer's own default damping); the index keeps the entries with the largest ratio over the whole model, so a
layer whose curvature is spread over many directions gets more of the budget than one with a few. Entries are
chosen one by one (not as a block of rows and columns) because EK-FAC's Λ is not a Kronecker product;
benchmarks/index_accuracy.py measures the alternatives at equal bytes.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from wherefrom.curvature.blocks import BlockDiagonal
from wherefrom.curvature.preconditioner import LayerCurvature
from wherefrom.errors import WherefromError
from wherefrom.index.budget import RowLayout, row_layout


@dataclass
class LayerProjection:
    """One layer's eigenbasis Q_S [out, out], Q_A [in(+1), in(+1)], the kept entries of the rotated gradient
    (flat indices into [out, in(+1)]), Λ on them, and the default damping 0.1 × mean(Λ) of the whole layer."""

    Q_S: torch.Tensor
    Q_A: torch.Tensor
    entries: torch.Tensor
    eigenvalues: torch.Tensor
    default_damping: float

    def to(self, device: torch.device) -> LayerProjection:
        """The same projection with its tensors on ``device``."""
        return LayerProjection(self.Q_S.to(device), self.Q_A.to(device), self.entries.to(device),
                               self.eigenvalues.to(device), self.default_damping)

    @property
    def size(self) -> int:
        """Numbers stored per sequence for this layer."""
        return int(self.entries.numel())

    def rotate(self, ds: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        """Q_Sᵀ (Σ_t Ds_t ā_tᵀ) Q_A for each row of the batch, every entry: [B, out, in(+1)]."""
        return torch.einsum("bto,bti->boi", ds @ self.Q_S.to(ds.dtype), a @ self.Q_A.to(a.dtype))

    def project(self, ds: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        """The kept entries of Q_Sᵀ (Σ_t Ds_t ā_tᵀ) Q_A for each row of the batch: [B, size]."""
        if self.size == 0:
            return ds.new_zeros(ds.shape[0], 0)
        return self.rotate(ds, a).flatten(1)[:, self.entries]

    def precondition(self, ds: torch.Tensor, a: torch.Tensor, damping: float | None) -> torch.Tensor:
        """The kept entries of (G + λI)⁻¹ ∇L_q in the eigenbasis, q̃ ⊘ (Λ + λ): [Q, size] float32."""
        lambda_ = self.default_damping if damping is None else damping
        return self.project(ds.float(), a.float()) / (self.eigenvalues.float() + lambda_)


def entry_importance(curvature: LayerCurvature) -> torch.Tensor:
    """Λ_ij / (Λ_ij + λ) for every entry of a layer's eigenbasis, flattened, with λ the layer's default damping."""
    Lambda = curvature.eigenvalues.flatten().float()
    return Lambda / (Lambda + curvature.damping(None))


def choose_projections(curvatures: dict[str, LayerCurvature],
                       budget: str) -> tuple[RowLayout, dict[str, LayerProjection]]:
    """The row ``budget`` buys, and each layer's kept entries: those with the largest Λ/(Λ+λ) over all layers
    (a layer may keep none)."""
    for name, curvature in curvatures.items():
        if curvature.eigenvalues is None or curvature.Q_S is None or curvature.Q_A is None:
            raise WherefromError(f"layer {name}: a gradient index needs an eigenbasis; fit the run with "
                                 "--strategy ekfac or kfac.")
    importance = [entry_importance(c) for c in curvatures.values()]
    layout = row_layout(budget, sum(i.numel() for i in importance))
    kept = torch.topk(torch.cat(importance), layout.values, sorted=False).indices
    projections, offset = {}, 0
    for (name, curvature), layer_importance in zip(curvatures.items(), importance):
        n = layer_importance.numel()
        entries = kept[(kept >= offset) & (kept < offset + n)].sort().values - offset
        projections[name] = _projection(curvature, entries)
        offset += n
    return layout, projections


def _projection(curvature: LayerCurvature, entries: torch.Tensor) -> LayerProjection:
    Q_S, Q_A = (Q.dense() if isinstance(Q, BlockDiagonal) else Q for Q in (curvature.Q_S, curvature.Q_A))
    return LayerProjection(
        Q_S=Q_S.contiguous(),
        Q_A=Q_A.contiguous(),
        entries=entries,
        eigenvalues=curvature.eigenvalues.flatten()[entries].float().contiguous(),
        default_damping=curvature.damping(None),
    )
