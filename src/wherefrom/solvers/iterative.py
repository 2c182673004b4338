"""Iterative solvers of (G + λI) x = b, batched over the rows of b [Q, P] (one system per query).

- Conjugate gradient (Hestenes & Stiefel), preconditioned by M ≈ (G + λI)⁻¹ when given (EK-FAC). For a
  block-diagonal A (and M), ``blocks`` runs one CG per block (its own step sizes): the blocks' systems are
  independent, and each converges as fast as it can on its own.
- LiSSA (Agarwal et al. 2017): x_j = b + (I - A/s) x_{j-1} with A = G + λI (G estimated on one batch per
  step), and A⁻¹ b ≈ x_J / s; it converges when s exceeds A's largest eigenvalue.
Both record the residual ‖b - A x‖ of every row after every iteration (with the exact operator), and the energy
bᵀx per row and block. Started from x0 = 0, CG's bᵀx_k = ‖x‖²_A - ‖x - x_k‖²_A (x = A⁻¹b, ‖v‖²_A = vᵀAv) rises
monotonically to bᵀA⁻¹b, since each step removes α_k r_kᵀz_k of the energy-norm error (Hestenes & Stiefel 1952).

Precision policy (docs/precision.md): the solvers' vectors (x, r, z, d, LiSSA's h), inner products, step sizes
and residuals are float32 whatever the model's dtype (float64 when b is float64, as in the exactness tests):
b is promoted on entry (:func:`solver_dtype`). The operator may use the model in its dtype (a bf16 Gauss-Newton
product, :class:`~wherefrom.solvers.ggn.GaussNewton`) and hands back its result in the vector's dtype.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from wherefrom.progress import track

Operator = Callable[[torch.Tensor], torch.Tensor]
Stop = Callable[[int, torch.Tensor, torch.Tensor], bool]  # (iterations done, relative residuals [Q, blocks],
#                                                          energies bᵀx [iterations + 1, Q, blocks]) → stop now?


@dataclass
class Solution:
    """x [Q, P], each row's relative residual ‖b - A x‖ / ‖b‖ after each iteration [iterations + 1, Q], and its
    energy bᵀx per block after each iteration [iterations + 1, Q, blocks]."""

    x: torch.Tensor
    residuals: torch.Tensor
    energies: torch.Tensor

    @property
    def iterations(self) -> int:
        return self.residuals.shape[0] - 1


def solver_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype the solvers work in for vectors of ``dtype``: float32, or float64 for float64 vectors."""
    return torch.promote_types(dtype, torch.float32)


def damped(G: Operator, damping: torch.Tensor) -> Operator:
    """A = G + λI, with λ one value per parameter [P] (each layer's λ_ℓ)."""
    return lambda x: G(x) + damping * x


def conjugate_gradient(A: Operator, b: torch.Tensor, iterations: int, preconditioner: Operator | None = None,
                       x0: torch.Tensor | None = None, description: str = "conjugate gradient",
                       quiet: bool = False, blocks: list[int] | None = None, stop: Stop | None = None) -> Solution:
    """Solve A x = b for symmetric positive definite A by (preconditioned) CG, from x0 (default 0).

    ``blocks``: sizes of A's diagonal blocks along P (one CG each); ``stop`` is asked after every iteration, with
    each block's relative residual, whether to stop early."""
    M = preconditioner or (lambda r: r)
    sizes = blocks or [b.shape[-1]]
    b = b.to(solver_dtype(b.dtype))  # precision policy: every vector and inner product below in float32
    tiny = torch.finfo(b.dtype).tiny
    x = torch.zeros_like(b) if x0 is None else x0.to(b.dtype, copy=True)
    r = b - A(x) if x0 is not None else b.clone()
    z = M(r)
    d = z.clone()
    rz = _block_dots(r, z, sizes)
    b_norm, b_block_norms = b.norm(dim=-1).clamp_min(tiny), _block_dots(b, b, sizes).sqrt().clamp_min(tiny)
    residuals, energies = [r.norm(dim=-1) / b_norm], [_block_dots(b, x, sizes)]
    for step in track(range(iterations), iterations, description, quiet):
        Ad = A(d)
        alpha = rz / _block_dots(d, Ad, sizes).clamp_min(tiny)
        x += _spread(alpha, sizes) * d
        r -= _spread(alpha, sizes) * Ad
        z = M(r)
        rz_next = _block_dots(r, z, sizes)
        d = z + _spread(rz_next / rz.clamp_min(tiny), sizes) * d
        rz = rz_next
        residuals.append(r.norm(dim=-1) / b_norm)
        energies.append(_block_dots(b, x, sizes))
        if stop is not None and stop(step + 1, _block_dots(r, r, sizes).sqrt() / b_block_norms, torch.stack(energies)):
            break
    return Solution(x, torch.stack(residuals), torch.stack(energies))


def _block_dots(u: torch.Tensor, v: torch.Tensor, sizes: list[int]) -> torch.Tensor:
    """Inner products of the rows of u and v [Q, P] within each block: [Q, blocks]."""
    return torch.stack([(p * q).sum(-1) for p, q in zip(u.split(sizes, -1), v.split(sizes, -1), strict=True)], -1)


def _spread(per_block: torch.Tensor, sizes: list[int]) -> torch.Tensor:
    """One value per row and block [Q, blocks] → one per row and parameter [Q, P]."""
    return per_block.repeat_interleave(torch.tensor(sizes), dim=-1)


def lissa(A_step: Callable[[torch.Tensor, int], torch.Tensor], b: torch.Tensor, scale: float, iterations: int,
          A: Operator | None = None, description: str = "LiSSA", quiet: bool = False,
          stop: Stop | None = None) -> Solution:
    """LiSSA's recursion with the (possibly stochastic) product ``A_step(x, step)``. Residuals are tracked with the
    exact ``A`` when given (one more product per iteration), else left NaN. ``stop`` is asked after every
    iteration (with the rows' residuals and energies as one block) whether to stop early."""
    b = b.to(solver_dtype(b.dtype))  # precision policy: h, its updates and the residuals in float32
    h = b.clone()
    b_norm = b.norm(dim=-1).clamp_min(torch.finfo(b.dtype).tiny)
    residuals, energies = [torch.ones_like(b_norm)], [torch.zeros_like(b_norm)[:, None]]
    for step in track(range(iterations), iterations, description, quiet):
        h = b + h - A_step(h, step) / scale
        residuals.append(torch.full_like(b_norm, float("nan")) if A is None else (b - A(h / scale)).norm(dim=-1) / b_norm)
        energies.append((b * h).sum(-1, keepdim=True) / scale)
        if stop is not None and stop(step + 1, residuals[-1][:, None], torch.stack(energies)):
            break
    return Solution(h / scale, torch.stack(residuals), torch.stack(energies))


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
