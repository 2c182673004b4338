"""Query batching (Grosse et al. sec. 3.2.2): keep each preconditioned query gradient at rank r by SVD."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class LowRankQueries:
    """V ≈ U diag(σ) Wᵀ per query: U [Q, out, r] (σ folded in) and W [Q, in, r]."""

    U: torch.Tensor
    W: torch.Tensor

    def dense(self) -> torch.Tensor:
        """U Wᵀ: the rank-r matrices [Q, out, in]."""
        return self.U @ self.W.transpose(-1, -2)


def low_rank(V: torch.Tensor, rank: int) -> LowRankQueries:
    """Best rank-``rank`` approximation of each [out, in] matrix in the batch V [Q, out, in] (Eckart-Young)."""
    U, sigma, Wh = torch.linalg.svd(V.double(), full_matrices=False)
    r = min(rank, sigma.shape[-1])
    return LowRankQueries((U[..., :r] * sigma[..., None, :r]).to(V.dtype), Wh[..., :r, :].transpose(-1, -2).to(V.dtype))
