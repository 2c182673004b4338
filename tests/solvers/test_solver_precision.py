"""The solvers' precision policy on a bf16 model: the Gauss-Newton products run through the model in bf16, while the
solvers' vectors, inner products and residuals are float32; checked against float64 solves of the explicit matrix."""

from __future__ import annotations

import copy

import pytest
import torch
from exact import gauss_newton
from test_ground_truth import sequences_of, whole_sequence_queries
from tiny import TEXTS, char_tokenizer, tiny_llama

from wherefrom.curvature.fitting import fit_curvature
from wherefrom.models.loading import prepare_for_influence
from wherefrom.models.selection import select_layers
from wherefrom.options import FitOptions
from wherefrom.solvers.ggn import GaussNewton
from wherefrom.solvers.iterative import conjugate_gradient, damped, lissa
from wherefrom.solvers.reference import like_with_like
from wherefrom.solvers.refine import refine_solution
from wherefrom.solvers.sample import flat_gradients
from wherefrom.solvers.trust import CheckOptions, trust_check

TOKENS = [char_tokenizer()(t)["input_ids"][:12] for t in TEXTS[:5]]


def relative_error(got: torch.Tensor, expected: torch.Tensor) -> float:
    return float(((got.double() - expected).norm(dim=-1) / expected.norm(dim=-1)).max())


@pytest.fixture(scope="module")
def models() -> dict[str, torch.nn.Module]:
    """The same random Llama in float32 and in bf16 (its weights rounded)."""
    float32 = prepare_for_influence(tiny_llama(layers=2, hidden=16))
    return {"float32": float32, "bf16": copy.deepcopy(float32).to(torch.bfloat16)}


@pytest.fixture(scope="module")
def explicit_gauss_newton(models) -> torch.Tensor:
    """G of the bf16 model's tracked MLP layers, in float64 from its rounded weights."""
    exact = copy.deepcopy(models["bf16"]).double()
    return gauss_newton(exact, select_layers(exact, "mlp"), TOKENS)


class Recording:
    """An operator that remembers the dtype of every vector it is applied to."""

    def __init__(self, A) -> None:
        self.A, self.dtypes = A, set()

    def __call__(self, v: torch.Tensor) -> torch.Tensor:
        self.dtypes.add(v.dtype)
        return self.A(v)


def test_cg_and_lissa_on_a_bf16_model_keep_float32_vectors_and_match_float64_solves(models, explicit_gauss_newton):
    G = explicit_gauss_newton
    size = G.shape[0]
    # λ = 0.1 × the largest eigenvalue: condition number 11, so CG converges in ~20 steps and the remaining error
    # is the bf16 products', not the solver's.
    damping = 0.1 * float(torch.linalg.eigvalsh(G).max())
    b = torch.randn(2, size, generator=torch.Generator().manual_seed(1))  # float32, as the solvers' callers give it
    exact = torch.linalg.solve(G + damping * torch.eye(size, dtype=torch.float64), b.double().T).T
    solutions = {}
    for name, model in models.items():
        A = Recording(damped(GaussNewton(model, select_layers(model, "mlp"), TOKENS, batch_size=5),
                             torch.full((size,), damping)))
        solutions[name] = conjugate_gradient(A, b, iterations=20, quiet=True)
        assert A.dtypes == {torch.float32}  # every search direction handed to the bf16 products is float32
    cg = solutions["bf16"]
    assert cg.x.dtype == torch.float32 and cg.residuals.dtype == torch.float32
    assert float(cg.residuals[-1].max()) < 1e-5
    # A bf16 x could not be closer to the float64 solve than its own rounding, up to 2^-9 per entry (bf16 vectors
    # gave 0.65% here); float32 vectors keep x to the bf16 products' accuracy (measured 0.17%, against the float32
    # model's CG 0.18%: the rounding of the weights moves the exact solution by only 0.06%).
    assert relative_error(cg.x, exact) < 5e-3
    assert relative_error(cg.x, solutions["float32"].x.double()) < 5e-3

    A = damped(GaussNewton(models["bf16"], select_layers(models["bf16"], "mlp"), TOKENS, batch_size=5),
               torch.full((size,), damping))
    scale = 1.2 * float(torch.linalg.eigvalsh(G).max() + damping)
    # Each step contracts the error by 1 - λ/scale = 0.92: 80 steps leave 0.2%.
    result = lissa(lambda v, _step: A(v), b.to(torch.bfloat16), scale, iterations=80, quiet=True)
    assert result.x.dtype == torch.float32 and result.residuals.dtype == torch.float32  # a bf16 b is promoted
    assert relative_error(result.x, exact) < 1e-2  # b itself was rounded to bf16 (up to 0.4% per entry)


def fitted(model: torch.nn.Module):
    """The model's tracked layers, its EK-FAC fitted on TOKENS, and two sequences' gradients as flat rows."""
    layers = select_layers(model, "mlp")
    curvature = fit_curvature(model, layers, sequences_of(TOKENS), FitOptions(batch_size=5), quiet=True)
    return layers, curvature, flat_gradients(model, layers, whole_sequence_queries(TOKENS[:2]), 2)


def test_check_and_refine_on_a_bf16_model_solve_in_float32_and_agree_with_float32(models, explicit_gauss_newton):
    reports = {}
    for name, model in models.items():
        layers, curvature, b = fitted(model)
        assert b.dtype == torch.float32  # the right-hand sides are formed in float32 from the bf16 factors
        reference = like_with_like(model, layers, curvature, FitOptions(), sequences_of(TOKENS), len(TOKENS), None, True)
        reports[name] = trust_check(model, layers, reference, b, CheckOptions(iterations=40, tolerance=0.01,
                                                                              batch_size=5), quiet=True)
    bf16, float32 = reports["bf16"], reports["float32"]
    assert [a.verdict for a in bf16.layers] == [a.verdict for a in float32.layers] != ["inconclusive"] * 3
    assert bf16.overall.energy_cosine == pytest.approx(float32.overall.energy_cosine, abs=0.01)

    # --refine cg on the bf16 model: EK-FAC-preconditioned CG on the full G, against the float64 solve. Its error is
    # the bf16 products' (the usual perturbation bound: κ(G + λI) times the product's relative error, here on the
    # exact solution: 11 × 0.54% = 6%; measured 2.0%, and 1.6e-5 for the float32 model).
    layers, curvature, b = fitted(models["bf16"])
    G = explicit_gauss_newton
    eigenvalues = torch.linalg.eigvalsh(G)
    damping = 0.1 * float(eigenvalues.max())
    exact = torch.linalg.solve(G + damping * torch.eye(G.shape[0], dtype=torch.float64), b.double().T).T
    product = GaussNewton(models["bf16"], layers, TOKENS, batch_size=5)(exact.float()).double()
    product_error = relative_error(product, exact @ G)
    condition = float((eigenvalues.max() + damping) / (eigenvalues.min() + damping))
    refined = refine_solution(models["bf16"], layers, curvature, b, sequences_of(TOKENS), damping, 20, len(TOKENS),
                              5, quiet=True)
    assert refined.x.dtype == torch.float32
    assert relative_error(refined.x, exact) < condition * product_error
