"""`wherefrom check`'s reference on tiny models where the damped Gauss-Newton matrix is formed exactly in float64:
the same G and λ on both sides, PCG's convergence as the theory says, and the energy cosine's identity."""

from __future__ import annotations

import pytest
import torch
from exact import gauss_newton, kronecker_matrix, sequence_gradient
from test_ground_truth import sequences_of, whole_sequence_queries
from tiny import TEXTS, char_tokenizer, tiny_gpt2

from wherefrom.curvature.fitting import fit_curvature
from wherefrom.models.loading import prepare_for_influence
from wherefrom.models.selection import select_layers
from wherefrom.options import FitOptions
from wherefrom.solvers.ggn import GaussNewton
from wherefrom.solvers.iterative import conjugate_gradient, damped
from wherefrom.solvers.layout import Layout
from wherefrom.solvers.preconditioned import curvature_inverse
from wherefrom.solvers.reference import like_with_like
from wherefrom.solvers.sample import flat_gradients
from wherefrom.solvers.trust import CheckOptions, cg_verdict, energy_cosine, trust_check

TOKENIZER = char_tokenizer()
TOKENS = [TOKENIZER(t)["input_ids"][:14] for t in TEXTS[:6]]
QUERIES = [TOKENIZER("paris is the capital")["input_ids"], TOKENIZER("a cat sat")["input_ids"]]


def tiny(fisher: str = "sampled"):
    """A float64 one-block GPT-2, its MLP layers, EK-FAC fitted on TOKENS, and the check's reference on all of them."""
    model = prepare_for_influence(tiny_gpt2(dtype=torch.float64, layers=1, hidden=8))
    layers = select_layers(model, "mlp")
    options = FitOptions(batch_size=3, fisher=fisher)
    curvature = fit_curvature(model, layers, sequences_of(TOKENS), options, quiet=True)
    reference = like_with_like(model, layers, curvature, options, sequences_of(TOKENS), len(TOKENS), None, True)
    return model, layers, curvature, reference


def blocks(layers, G: torch.Tensor):
    """(layer, slice) of each layer's block in the flat layout."""
    lo = 0
    for layer, n in zip(layers, Layout.of(layers).sizes, strict=True):
        yield layer, slice(lo, lo + n)
        lo += n


def test_both_sides_share_g_and_damping_by_construction():
    model, layers, curvature, reference = tiny()
    assert not reference.refitted and reference.curvature is curvature
    assert [s.input_ids for s in reference.sequences] == [tuple(t) for t in TOKENS]  # G on the fitted sequences
    G = gauss_newton(model, layers, TOKENS)  # tests/exact.py: jacrev of the logits, no wherefrom code
    layout = Layout.of(layers)
    A = damped(GaussNewton(model, layers, TOKENS, 3, block_diagonal=True),
               layout.expand(reference.dampings, torch.float64))
    M = curvature_inverse(reference.curvature.layers, layout, reference.dampings)
    V = torch.randn(3, layout.size, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    for layer, rows in blocks(layers, G):
        fitted = curvature.layers[layer.name]
        damping = reference.dampings[layer.name]
        assert damping == pytest.approx(0.1 * float(fitted.eigenvalues.mean()), rel=1e-12)  # the run's λ_ℓ
        block = G[rows, rows] + damping * torch.eye(rows.stop - rows.start, dtype=torch.float64)
        only = torch.zeros_like(V)
        only[:, rows] = V[:, rows]
        torch.testing.assert_close(A(only)[:, rows], only[:, rows] @ block, rtol=1e-9, atol=1e-14)
        approximate = kronecker_matrix(fitted).double() + damping * torch.eye(block.shape[0], dtype=torch.float64)
        torch.testing.assert_close(M(only)[:, rows], torch.linalg.solve(approximate, only[:, rows].T).T)
        # The same normalisation: EK-FAC's trace (the sum of Λ) estimates trace G_ℓℓ, each a mean over the fitted
        # sequences of token-summed terms (a token mean would be 13 times smaller; the labels are sampled once).
        assert float(fitted.eigenvalues.sum()) == pytest.approx(float(G[rows, rows].trace()), rel=0.1)


def test_a_smaller_sample_gets_a_curvature_fitted_on_exactly_it():
    model, layers, curvature, _ = tiny()
    options = FitOptions(batch_size=3, fisher="empirical")
    reference = like_with_like(model, layers, curvature, options, sequences_of(TOKENS), 4, None, True)
    assert reference.refitted and len(reference.sequences) == 4
    assert reference.dampings == {layer.name: 0.1 * float(curvature.layers[layer.name].eigenvalues.mean())
                                  for layer in layers}  # the run's λ, not the sample's
    # With data labels EK-FAC's Λ is exactly diag(Qᵀ F Q), F = (1/N) Σ_n g_n g_nᵀ over the sequences it was fitted
    # on: here, by autograd, over the sample and nothing else.
    sample = [list(s.input_ids) for s in reference.sequences]
    grads = torch.stack([sequence_gradient(model, layers, t) for t in sample])
    F = grads.T @ grads / len(sample)
    for layer, rows in blocks(layers, F):
        fitted = reference.curvature.layers[layer.name]
        Q = torch.kron(fitted.Q_S.double(), fitted.Q_A.double())
        expected = (Q.T @ F[rows, rows] @ Q).diagonal()
        torch.testing.assert_close(fitted.eigenvalues.reshape(-1).double(), expected, rtol=1e-6, atol=1e-12)


def test_the_reference_cg_converges_to_the_exact_solution_as_pcg_theory_says():
    model, layers, curvature, reference = tiny()
    G = gauss_newton(model, layers, TOKENS)
    layout = Layout.of(layers)
    b = flat_gradients(model, layers, whole_sequence_queries(QUERIES), 2)
    A = damped(GaussNewton(model, layers, TOKENS, 3, block_diagonal=True), layout.expand(reference.dampings, b.dtype))
    M = curvature_inverse(reference.curvature.layers, layout, reference.dampings)
    solution = conjugate_gradient(A, b, 80, preconditioner=M, quiet=True, blocks=layout.sizes)
    three = conjugate_gradient(A, b, 3, preconditioner=M, quiet=True, blocks=layout.sizes)
    for i, (layer, rows) in enumerate(blocks(layers, G)):
        n = rows.stop - rows.start
        block = G[rows, rows] + reference.dampings[layer.name] * torch.eye(n, dtype=torch.float64)
        approximate = kronecker_matrix(curvature.layers[layer.name]).double() + reference.dampings[layer.name] * \
            torch.eye(n, dtype=torch.float64)
        exact = torch.linalg.solve(block, b[:, rows].T).T
        energy = (b[:, rows] * exact).sum(-1)  # bᵀA⁻¹b = ‖x‖²_A
        # ‖x - x_k‖²_A = bᵀA⁻¹b - bᵀx_k: the recorded energies measure CG's energy-norm error
        squared = (energy - solution.energies[:, :, i]) / energy  # ‖x - x_k‖²_A / ‖x‖²_A [iterations + 1, Q]
        early = three.x[:, rows] - exact  # after 3 iterations, where the error is far from 0
        torch.testing.assert_close(squared[3], ((early @ block) * early).sum(-1) / energy, rtol=1e-8, atol=0)
        # monotone non-increasing (CG minimises it over a growing Krylov space) down to the round-off floor
        falling = squared[:-1] > 1e-6
        assert (squared[1:][falling] <= squared[:-1][falling] * (1 + 1e-9)).all()
        errors = squared.clamp_min(0).sqrt()
        eigenvalues = torch.linalg.eigvals(torch.linalg.solve(approximate, block)).real  # of M A
        kappa = float(eigenvalues.max() / eigenvalues.min())
        rate = (kappa ** 0.5 - 1) / (kappa ** 0.5 + 1)
        steps = torch.arange(errors.shape[0], dtype=torch.float64)[:, None]
        # ‖e_k‖_A ≤ 2 ((√κ-1)/(√κ+1))^k ‖e_0‖_A, down to the floor of an energy difference in float64: bᵀA⁻¹b - bᵀx_k
        # cancels to a few ε of the energy, so the relative norm bottoms out near √(10 ε) ≈ 5e-8
        assert (errors <= 2 * rate ** steps + 1e-7).all(), kappa
        assert float(((solution.x[:, rows] - exact).norm(dim=-1) / exact.norm(dim=-1)).max()) < 1e-8


def test_the_energy_cosine_is_that_of_the_exact_solution_and_a_bound_before():
    model, layers, curvature, reference = tiny()
    G = gauss_newton(model, layers, TOKENS)
    b = flat_gradients(model, layers, whole_sequence_queries(QUERIES), 2)
    options = CheckOptions(iterations=60, tolerance=1e-6, batch_size=3, layers=0)
    report = trust_check(model, layers, reference, b, options, quiet=True)
    early = trust_check(model, layers, reference, b, CheckOptions(iterations=2, batch_size=3, layers=0), quiet=True)
    for (layer, rows), got, bound in zip(blocks(layers, G), report.layers, early.layers, strict=True):
        n = rows.stop - rows.start
        block = G[rows, rows] + reference.dampings[layer.name] * torch.eye(n, dtype=torch.float64)
        shape = (layer.shape.out_features, layer.shape.in_dim)
        estimate = curvature.layers[layer.name].solve(b[:, rows].reshape(-1, *shape),
                                                      reference.dampings[layer.name]).reshape(-1, n)
        exact = torch.linalg.solve(block, b[:, rows].T).T
        A_estimate = estimate @ block
        expected = (A_estimate * exact).sum(-1) / ((A_estimate * estimate).sum(-1) * (exact @ block * exact).sum(-1)).sqrt()
        assert got.energy_cosine == pytest.approx(float(expected.mean()), abs=1e-7)
        assert float(energy_cosine(estimate, A_estimate, b[:, rows], (b[:, rows] * exact).sum(-1)).mean()) == \
            pytest.approx(float(expected.mean()), abs=1e-10)
        assert bound.energy_cosine >= got.energy_cosine - 1e-12  # two iterations: an upper bound
        assert got.verdict != "inconclusive" and got.solver_error < 1e-6


@pytest.mark.parametrize(("bound", "error", "word"), [
    (0.65, 1.0, "not trustworthy"),  # the bound alone settles it: cos_A ≤ 0.65 whatever CG does next
    (0.80, 0.05, "roughly right"),  # converged (error ≤ tolerance 0.1)
    (0.95, 0.30, "trustworthy"),  # unconverged, but cos_A ∈ [0.95 √(1 - 0.09), 0.95] = [0.906, 0.95]
    (0.93, 0.30, "inconclusive"),  # cos_A ∈ [0.887, 0.93] straddles 0.9
    (0.75, 0.30, "roughly right"),  # [0.715, 0.75]
])
def test_a_stopped_solver_gives_the_verdict_its_interval_allows(bound, error, word):
    assert cg_verdict(bound, error, 0.1) == word


def test_a_falling_energy_is_not_taken_for_convergence_and_round_off_is():
    """CG's energies rise in exact arithmetic; a fall beyond round-off (lost conjugacy) must keep the estimated
    error at the size of that step, while a step within round-off of the energy means converged."""
    from wherefrom.solvers.trust import ERROR_FACTOR, energy_error

    energies = torch.tensor([[0.0, 0.0, 0.0], [0.5, 0.5, 0.5], [1.0, 1.0, 1.0],
                             [1.0 - 1e-7, 1.0 + 1e-7, 1.0 + 1e-14]], dtype=torch.float64)
    error = energy_error(energies)
    expected = ERROR_FACTOR * torch.tensor([1e-7 / (1 - 1e-7), 1e-7 / (1 + 1e-7)], dtype=torch.float64).sqrt()
    assert torch.allclose(error[:2], expected, rtol=1e-6) and error[2] == 0
    assert torch.equal(energy_error(energies[:2]), torch.ones(3, dtype=torch.float64))
