"""The index's compression: each layer's gradient kept on the eigendirections of G with the largest eigenvalues.

In the Kronecker eigenbasis the influence is a weighted sum (Grosse et al. eq. 21 and 30):

    I(z, q) = Σ_ij  q̃_ij g̃_ij / (Λ_ij + λ),   q̃ = Q_Sᵀ ∇L_q Q_A,   g̃ = Q_Sᵀ ∇L_z Q_A.

Training gradients put about Λ_ij of their energy on direction ij (that is what Λ measures), so direction ij
adds about Λ_ij / (Λ_ij + λ) to a score: close to 1 where Λ ≫ λ, close to 0 where Λ ≪ λ. Keeping the entries
ij with the largest Λ_ij keeps the terms that matter and drops those the damping suppresses anyway; a sequence
then costs ``size`` numbers per layer instead of out·in. Entries are chosen one by one (not as a block of
rows and columns) because EK-FAC's Λ is not a Kronecker product; benchmarks/index_accuracy.py measures the
alternatives (row/column blocks, random projections), which keep less of the score for the same size.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from wherefrom.curvature.blocks import BlockDiagonal
from wherefrom.curvature.preconditioner import LayerCurvature
from wherefrom.errors import WherefromError


@dataclass
class LayerProjection:
    """One layer's eigenbasis Q_S [out, out], Q_A [in(+1), in(+1)], the kept entries of the rotated gradient
    (flat indices into [out, in(+1)]), Λ on them, and the default damping 0.1 × mean(Λ) of the whole layer."""

    Q_S: torch.Tensor
    Q_A: torch.Tensor
    entries: torch.Tensor
    eigenvalues: torch.Tensor
    default_damping: float

    @property
    def size(self) -> int:
        """Numbers stored per sequence for this layer."""
        return int(self.entries.numel())

    def rotate(self, ds: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        """Q_Sᵀ (Σ_t Ds_t ā_tᵀ) Q_A for each row of the batch, every entry: [B, out, in(+1)]."""
        return torch.einsum("bto,bti->boi", ds @ self.Q_S.to(ds.dtype), a @ self.Q_A.to(a.dtype))

    def project(self, ds: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        """The kept entries of Q_Sᵀ (Σ_t Ds_t ā_tᵀ) Q_A for each row of the batch: [B, size]."""
        return self.rotate(ds, a).flatten(1)[:, self.entries]

    def precondition(self, ds: torch.Tensor, a: torch.Tensor, damping: float | None) -> torch.Tensor:
        """The kept entries of (G + λI)⁻¹ ∇L_q in the eigenbasis, q̃ ⊘ (Λ + λ): [Q, size] float32."""
        lambda_ = self.default_damping if damping is None else damping
        return self.project(ds.float(), a.float()) / (self.eigenvalues.float() + lambda_)


def choose_projection(name: str, curvature: LayerCurvature, size: int) -> LayerProjection:
    """Keep the ``size`` entries of layer ``name``'s eigenbasis with the largest eigenvalues Λ_ij."""
    if curvature.eigenvalues is None or curvature.Q_S is None or curvature.Q_A is None:
        raise WherefromError(f"layer {name}: a gradient index needs an eigenbasis; fit the run with "
                             "--strategy ekfac or kfac.")
    if size < 1:
        raise WherefromError(f"--size must be at least 1, got {size}.")
    Q_S, Q_A = (Q.dense() if isinstance(Q, BlockDiagonal) else Q for Q in (curvature.Q_S, curvature.Q_A))
    Lambda = curvature.eigenvalues.flatten()
    entries = Lambda.argsort(descending=True)[:size].sort().values
    return LayerProjection(
        Q_S=Q_S.contiguous(),
        Q_A=Q_A.contiguous(),
        entries=entries,
        eigenvalues=Lambda[entries].float().contiguous(),
        default_damping=curvature.damping(None),
    )
