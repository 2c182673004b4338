"""PBRF against a closed form: on a linear model with squared error the objective is quadratic and the Bregman
divergence is ½‖h - h_s‖², so the minimiser is the damped Gauss-Newton response (G + λI + ε H_z)⁻¹ (-ε ∇L(z))."""

from __future__ import annotations

import torch

from wherefrom.solvers.pbrf import Problem, pbrf_response


def linear_regression(n: int = 12, n_in: int = 4, n_out: int = 3, batch: int = 5):
    generator = torch.Generator().manual_seed(0)
    X = torch.randn(n, n_in, generator=generator, dtype=torch.float64)
    Y = torch.randn(n, n_out, generator=generator, dtype=torch.float64)
    W_s = torch.randn(n_out, n_in, generator=generator, dtype=torch.float64)
    chunks = [slice(lo, min(lo + batch, n)) for lo in range(0, n, batch)]

    def problem(inputs: torch.Tensor, targets: torch.Tensor, cut: list[slice]) -> Problem:
        return Problem(W_s.reshape(-1), len(cut), inputs.shape[0],
                       outputs=lambda theta, b: inputs[cut[b]] @ theta.reshape(n_out, n_in).T,
                       loss=lambda h, b: 0.5 * (h - targets[cut[b]]).square().sum())

    x_z, y_z = torch.randn(1, n_in, generator=generator, dtype=torch.float64), torch.zeros(1, n_out, dtype=torch.float64)
    return X, W_s, problem(X, Y, chunks), problem(x_z, y_z, [slice(0, 1)]), x_z, y_z


def test_pbrf_of_a_linear_model_with_squared_error_is_the_exact_damped_gauss_newton_response():
    X, W_s, data, upweighted, x_z, y_z = linear_regression()
    n_out, n_in = W_s.shape
    # Row-major vec(W): h = W x has Jacobian I ⊗ xᵀ, so G = I ⊗ XᵀX / N and the Hessian of L(z) is I ⊗ x_z x_zᵀ.
    G = torch.kron(torch.eye(n_out, dtype=torch.float64), X.T @ X / X.shape[0])
    H_z = torch.kron(torch.eye(n_out, dtype=torch.float64), x_z.T @ x_z)
    grad_z = ((W_s @ x_z.T - y_z.T) @ x_z).reshape(-1)  # ∇L(z) at θ_s
    damping = torch.linspace(0.01, 0.05, G.shape[0], dtype=torch.float64)  # per-parameter λ
    for epsilon in (0.5, 0.01):
        got = pbrf_response(data, upweighted, damping, epsilon, iterations=100, quiet=True)
        # The objective is quadratic: its minimiser solves (G + λI + ε H_z) Δ = -ε ∇L(z) exactly.
        exact = -epsilon * torch.linalg.solve(G + torch.diag(damping) + epsilon * H_z, grad_z)
        # The Bregman term is a difference of O(1) losses worth O(ε²): its round-off limits the line search to ~1e-5.
        assert float((got - exact).norm() / exact.norm()) < 1e-4


def test_pbrf_of_a_tiny_language_model_approaches_the_damped_gauss_newton_response():
    from exact import gauss_newton, sequence_gradient
    from tiny import TEXTS, char_tokenizer, tiny_gpt2

    from wherefrom.models.loading import prepare_for_influence
    from wherefrom.models.selection import select_layers
    from wherefrom.solvers.pbrf import language_model_problem

    model = prepare_for_influence(tiny_gpt2(dtype=torch.float64, layers=1, hidden=8))
    layers = select_layers(model, "mlp")
    tokens = [char_tokenizer()(t)["input_ids"][:10] for t in TEXTS[:4]]
    G = gauss_newton(model, layers, tokens)
    damping = torch.full((G.shape[0],), 0.1 * float(G.diagonal().mean()), dtype=torch.float64)
    first_order = -torch.linalg.solve(G + torch.diag(damping), sequence_gradient(model, layers, tokens[0]))
    problem, upweighted = language_model_problem(model, layers, tokens, batch_size=3), language_model_problem(
        model, layers, tokens[:1])

    def deviation(epsilon: float) -> float:
        delta = pbrf_response(problem, upweighted, damping, epsilon, iterations=200, quiet=True)
        return float((delta / epsilon - first_order).norm() / first_order.norm())

    large, small = deviation(1e-3), deviation(1e-4)  # measured: 0.26 and 0.025
    assert small < 0.05 and 7 < large / small < 13  # the deviation is first order in ε: PBRF's curvature, not noise
