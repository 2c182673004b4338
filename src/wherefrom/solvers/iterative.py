"""Iterative solvers of (G + λI) x = b, batched over the rows of b [Q, P] (one system per query).

- Conjugate gradient (Hestenes & Stiefel), preconditioned by M ≈ (G + λI)⁻¹ when given (EK-FAC).
- LiSSA (Agarwal et al. 2017): x_j = b + (I - A/s) x_{j-1} with A = G + λI (G estimated on one batch per
  step), and A⁻¹ b ≈ x_J / s; it converges when s exceeds A's largest eigenvalue.
Both record the residual ‖b - A x‖ of every row after every iteration (with the exact operator).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from wherefrom.progress import track

Operator = Callable[[torch.Tensor], torch.Tensor]


@dataclass
class Solution:
    """x [Q, P] and each row's relative residual ‖b - A x‖ / ‖b‖ after each iteration [iterations + 1, Q]."""

    x: torch.Tensor
    residuals: torch.Tensor

    @property
    def iterations(self) -> int:
        return self.residuals.shape[0] - 1


def damped(G: Operator, damping: torch.Tensor) -> Operator:
    """A = G + λI, with λ one value per parameter [P] (each layer's λ_ℓ)."""
    return lambda x: G(x) + damping * x


def conjugate_gradient(A: Operator, b: torch.Tensor, iterations: int, preconditioner: Operator | None = None,
                       x0: torch.Tensor | None = None, description: str = "conjugate gradient",
                       quiet: bool = False) -> Solution:
    """Solve A x = b for symmetric positive definite A by (preconditioned) CG, from x0 (default 0)."""
    M = preconditioner or (lambda r: r)
    x = torch.zeros_like(b) if x0 is None else x0.clone()
    r = b - A(x) if x0 is not None else b.clone()
    z = M(r)
    d = z.clone()
    rz = (r * z).sum(-1)
    b_norm = b.norm(dim=-1).clamp_min(torch.finfo(b.dtype).tiny)
    residuals = [r.norm(dim=-1) / b_norm]
    for _ in track(range(iterations), iterations, description, quiet):
        Ad = A(d)
        alpha = rz / (d * Ad).sum(-1).clamp_min(torch.finfo(b.dtype).tiny)
        x += alpha[:, None] * d
        r -= alpha[:, None] * Ad
        z = M(r)
        rz_next = (r * z).sum(-1)
        d = z + (rz_next / rz.clamp_min(torch.finfo(b.dtype).tiny))[:, None] * d
        rz = rz_next
        residuals.append(r.norm(dim=-1) / b_norm)
    return Solution(x, torch.stack(residuals))


def lissa(A_step: Callable[[torch.Tensor, int], torch.Tensor], b: torch.Tensor, scale: float, iterations: int,
          A: Operator | None = None, description: str = "LiSSA", quiet: bool = False) -> Solution:
    """LiSSA's recursion with the (possibly stochastic) product ``A_step(x, step)``. Residuals are tracked with the
    exact ``A`` when given (one more product per iteration), else left NaN."""
    h = b.clone()
    b_norm = b.norm(dim=-1).clamp_min(torch.finfo(b.dtype).tiny)
    residuals = [torch.ones_like(b_norm)]
    for step in track(range(iterations), iterations, description, quiet):
        h = b + h - A_step(h, step) / scale
        residuals.append(torch.full_like(b_norm, float("nan")) if A is None else (b - A(h / scale)).norm(dim=-1) / b_norm)
    return Solution(h / scale, torch.stack(residuals))


def largest_eigenvalue(A: Operator, size: int, dtype: torch.dtype, iterations: int = 20, seed: int = 0,
                       device: torch.device | str = "cpu") -> float:
    """The largest eigenvalue of a symmetric PSD operator on ``device`` by power iteration (a lower bound that
    tightens)."""
    generator = torch.Generator().manual_seed(seed)
    v = torch.randn(1, size, generator=generator, dtype=torch.float64).to(device, dtype)
    v /= v.norm()
    value = 0.0
    for _ in range(iterations):
        Av = A(v)
        value = float((v * Av).sum())
        v = Av / Av.norm().clamp_min(torch.finfo(dtype).tiny)
    return value
