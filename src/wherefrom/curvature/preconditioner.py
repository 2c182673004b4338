"""Damped inverse-Hessian-vector products (G + λI)⁻¹ V per layer, for every strategy.

In the Kronecker eigenbasis (Grosse et al. eq. 21): (G + λI)⁻¹ V ≈ Q_S [(Q_Sᵀ V Q_A) ⊘ (Λ + λ)] Q_Aᵀ,
with Λ the EK-FAC corrected eigenvalues, or τ·(Λ_S ⊗ Λ_A) for K-FAC (τ = tokens per sequence, because G is
the mean per-sequence token-summed Gauss-Newton Hessian). The diagonal strategy uses Q = I; identity skips G.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from wherefrom.curvature.blocks import Basis

DAMPING_FACTOR = 0.1  # λ_ℓ = 0.1 × mean(Λ_ℓ), the paper's heuristic


@dataclass
class LayerCurvature:
    """One layer's curvature: eigenbases, dense or block-diagonal (None = standard basis), and eigenvalues
    Λ [out, in(+1)] (None = identity)."""

    Q_A: Basis | None
    Q_S: Basis | None
    eigenvalues: torch.Tensor | None

    def to(self, device: torch.device | str) -> LayerCurvature:
        """The same curvature with its tensors on ``device``."""
        return LayerCurvature(*(None if t is None else t.to(device) for t in (self.Q_A, self.Q_S, self.eigenvalues)))

    def damping(self, absolute: float | None) -> float:
        """λ for this layer: the absolute value if given, else 0.1 × mean(Λ). A layer whose Λ is zero saw no token
        of the fitted corpus (an expert no token was routed to): it has no curvature to scale λ by, so λ = ∞ and
        influence through it is 0 (every fitted sequence's gradient there is 0 as well)."""
        if absolute is not None:
            return absolute
        if self.eigenvalues is None:
            return 0.0
        mean = float(self.eigenvalues.mean())
        return DAMPING_FACTOR * mean if mean > 0 else math.inf

    def precondition(self, ds: torch.Tensor, a: torch.Tensor, damping: float | None = None) -> torch.Tensor:
        """(G + λI)⁻¹ V for gradients given by their rows, V_q = Σ_t ds[q, t] a[q, t]ᵀ: [Q, out, in(+1)].

        The forward rotation works on the rows (cost T·(out² + in²) instead of out·in·(out + in) per query);
        arithmetic is in the gradients' dtype, the eigendecomposition having been done in float64.
        """
        if self.eigenvalues is None:
            return torch.einsum("qto,qti->qoi", ds, a)  # identity: the plain gradient dot product
        if self.Q_S is not None:
            ds = ds @ self.Q_S.to(ds.dtype)
        if self.Q_A is not None:
            a = a @ self.Q_A.to(a.dtype)
        rotated = torch.einsum("qto,qti->qoi", ds, a)  # Q_Sᵀ V Q_A
        rotated /= (self.eigenvalues + self.damping(damping)).to(rotated.dtype)
        return self.from_eigenbasis(rotated)

    def solve(self, V: torch.Tensor, damping: float | None = None) -> torch.Tensor:
        """(G + λI)⁻¹ V for dense gradients V [..., out, in(+1)] (eq. 21)."""
        if self.eigenvalues is None:
            return V
        rotated = V if self.Q_S is None else self.Q_S.T.to(V.dtype) @ V
        rotated = rotated if self.Q_A is None else rotated @ self.Q_A.to(V.dtype)
        return self.from_eigenbasis(rotated / (self.eigenvalues + self.damping(damping)).to(V.dtype))

    def from_eigenbasis(self, V: torch.Tensor) -> torch.Tensor:
        """Q_S V Q_Aᵀ."""
        if self.Q_S is not None:
            V = self.Q_S.to(V.dtype) @ V
        return V if self.Q_A is None else V @ self.Q_A.T.to(V.dtype)
