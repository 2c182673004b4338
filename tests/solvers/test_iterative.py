"""Gauss-Newton-vector products, CG and LiSSA against the explicit float64 Gauss-Newton matrix (tests/exact.py)."""

from __future__ import annotations

import pytest
import torch
from exact import block_diagonal, gauss_newton
from tiny import TEXTS, char_tokenizer, tiny_gpt2, tiny_llama

from wherefrom.models.loading import prepare_for_influence
from wherefrom.models.selection import select_layers
from wherefrom.solvers.ggn import GaussNewton
from wherefrom.solvers.iterative import conjugate_gradient, damped, largest_eigenvalue, lissa

TOKENS = [char_tokenizer()(t)["input_ids"][:12] for t in TEXTS[:5]]


def relative_error(got: torch.Tensor, expected: torch.Tensor) -> float:
    return float(((got - expected).norm(dim=-1) / expected.norm(dim=-1)).max())


def setting(make_model, modules: str = "mlp"):
    model = prepare_for_influence(make_model(dtype=torch.float64, layers=1, hidden=8))
    layers = select_layers(model, modules)
    return model, layers, gauss_newton(model, layers, TOKENS)


@pytest.mark.parametrize("make_model", [tiny_llama, tiny_gpt2], ids=["llama-linear", "gpt2-conv1d-bias"])
@pytest.mark.parametrize("block", [False, True], ids=["full", "block-diagonal"])
def test_gauss_newton_products_equal_the_explicit_matrix(make_model, block):
    model, layers, G = setting(make_model)
    if block:
        G = block_diagonal(G, [layer.shape.out_features * layer.shape.in_dim for layer in layers])
    operator = GaussNewton(model, layers, TOKENS, batch_size=2, block_diagonal=block)  # padded batches
    V = torch.randn(3, G.shape[0], dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    # Llama's RMSNorm computes in float32 even in a float64 model, so forward- and reverse-mode round differently.
    tolerance = 1e-6 if make_model is tiny_llama else 1e-12
    assert relative_error(operator(V), V @ G) < tolerance


def test_conjugate_gradient_and_lissa_converge_to_the_exact_damped_inverse():
    model, layers, G = setting(tiny_gpt2)
    damping = torch.full((G.shape[0],), 0.1 * float(G.diagonal().mean()), dtype=torch.float64)
    b = torch.randn(2, G.shape[0], dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    exact = torch.linalg.solve(G + torch.diag(damping), b.T).T
    A = damped(GaussNewton(model, layers, TOKENS, batch_size=5), damping)

    cg = conjugate_gradient(A, b, iterations=80, quiet=True)
    assert relative_error(cg.x, exact) < 1e-6
    assert float(cg.residuals[-1].max()) < 1e-6 and cg.iterations == 80

    # LiSSA contracts by (1 - λ_min/s) per step: a larger damping keeps the test's condition number near 13.
    damping = torch.full((G.shape[0],), 0.1 * float(torch.linalg.eigvalsh(G).max()), dtype=torch.float64)
    exact = torch.linalg.solve(G + torch.diag(damping), b.T).T
    A = damped(GaussNewton(model, layers, TOKENS, batch_size=5), damping)
    scale = 1.2 * largest_eigenvalue(A, G.shape[0], torch.float64, iterations=30)
    assert scale > 1.1 * float(torch.linalg.eigvalsh(G + torch.diag(damping)).max())
    result = lissa(lambda x, _step: A(x), b, scale, iterations=200, quiet=True)
    assert relative_error(result.x, exact) < 1e-5
    assert result.iterations == 200 and torch.isnan(result.residuals[1:]).all()  # no exact operator: not tracked


def test_preconditioning_with_the_exact_inverse_solves_in_one_step():
    model, layers, G = setting(tiny_gpt2)
    A_matrix = G + 0.01 * torch.eye(G.shape[0], dtype=torch.float64)
    b = torch.randn(2, G.shape[0], dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    inverse = torch.linalg.inv(A_matrix)
    solution = conjugate_gradient(lambda x: x @ A_matrix, b, iterations=1, preconditioner=lambda r: r @ inverse,
                                  quiet=True)
    torch.testing.assert_close(solution.x, b @ inverse, rtol=1e-8, atol=1e-10)
