"""Independent ground truth in float64: autograd per-sequence gradients and the explicit Gauss-Newton Hessian.

Nothing here uses wherefrom's engine: gradients come from ``.backward()`` on the tracked weights, the GGN from
torch.func Jacobians of the logits, and influence from a dense linear solve.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.func import functional_call, jacrev

from wherefrom.models.selection import TrackedLayer


def to_wbar(layer: TrackedLayer, grads: dict[str, torch.Tensor]) -> torch.Tensor:
    """Parameter-shaped tensors (weight, bias; any leading dims) → W̄ layout [..., out, in(+1)], flattened row-major."""
    W = layer.wbar_of(grads)
    return W.reshape(*W.shape[:-2], -1)


def _parameters(layers: list[TrackedLayer]) -> dict[str, torch.nn.Parameter]:
    """The distinct parameters holding the layers' W̄, by full name (experts of one module share theirs)."""
    return {f"{layer.module_name}.{n}": getattr(layer.module, n) for layer in layers for n in layer.parameter_names}


def _wbars(layers: list[TrackedLayer], by_name: dict[str, torch.Tensor]) -> torch.Tensor:
    return torch.cat([to_wbar(layer, {n: by_name[f"{layer.module_name}.{n}"] for n in layer.parameter_names})
                      for layer in layers], dim=-1)


def nll(logits: torch.Tensor, ids: torch.Tensor, first_target: int) -> torch.Tensor:
    """Σ_{t ≥ first_target} -log p(ids[t] | ids[<t]) for one unpadded sequence."""
    return F.cross_entropy(logits[0, first_target - 1:-1], ids[first_target:], reduction="sum")


def sequence_gradient(model: torch.nn.Module, layers: list[TrackedLayer], ids: list[int], first_target: int = 1
                      ) -> torch.Tensor:
    """∇ of the token-summed NLL w.r.t. all tracked layers' W̄, by plain autograd: [P]."""
    params = _parameters(layers)
    for p in params.values():
        p.requires_grad_(True)
    x = torch.tensor([ids])
    grads = torch.autograd.grad(nll(model(input_ids=x).logits, x[0], first_target), list(params.values()))
    for p in params.values():
        p.requires_grad_(False)
    return _wbars(layers, dict(zip(params, grads)))


def gauss_newton(model: torch.nn.Module, layers: list[TrackedLayer], sequences: list[list[int]]) -> torch.Tensor:
    """G = (1/N) Σ_n Σ_t J_tᵀ (diag p_t - p_t p_tᵀ) J_t over predicting positions: the exact GGN (true Fisher) [P, P]."""
    base = {n: p.detach() for n, p in _parameters(layers).items()}
    G = None
    for ids in sequences:
        x = torch.tensor([ids])

        def logits_of(params: dict[str, torch.Tensor]) -> torch.Tensor:
            return functional_call(model, params, (x,)).logits[0, :-1]  # predicting positions

        jac = jacrev(logits_of)(base)  # name -> [T-1, V, *param shape]
        logits = logits_of(base)
        J = _wbars(layers, jac)  # [T-1, V, P]
        p = torch.softmax(logits, dim=-1)
        H = torch.diag_embed(p) - p[:, :, None] * p[:, None, :]
        term = torch.einsum("tvp,tvw,twq->pq", J, H, J)
        G = term if G is None else G + term
    return G / len(sequences)


def block_diagonal(G: torch.Tensor, sizes: list[int]) -> torch.Tensor:
    """Zero every entry outside the per-layer diagonal blocks (the paper's layer-independence assumption)."""
    out = torch.zeros_like(G)
    lo = 0
    for n in sizes:
        out[lo:lo + n, lo:lo + n] = G[lo:lo + n, lo:lo + n]
        lo += n
    return out


def damped_influence(G: torch.Tensor, query_grads: torch.Tensor, train_grads: torch.Tensor, damping: torch.Tensor
                     ) -> torch.Tensor:
    """∇L_qᵀ (G + λI)⁻¹ ∇L_z for all pairs; ``damping`` is per parameter (one λ per layer block): [Q, N]."""
    solved = torch.linalg.solve(G + torch.diag(damping), query_grads.T)
    return solved.T @ train_grads.T


def kronecker_basis(curvature: object) -> torch.Tensor:
    """Q_S ⊗ Q_A as a dense matrix on the CPU (block-diagonal bases made dense)."""
    return torch.kron(*((Q.dense() if hasattr(Q, "dense") else Q).cpu() for Q in (curvature.Q_S, curvature.Q_A)))


def kronecker_matrix(curvature: object) -> torch.Tensor:
    """The dense G a fitted layer stands for: (Q_S ⊗ Q_A) diag(Λ) (Q_S ⊗ Q_A)ᵀ, in row-major vec(W̄) order."""
    Q = kronecker_basis(curvature)
    return Q @ torch.diag(curvature.eigenvalues.reshape(-1).cpu()) @ Q.T
