"""wherefrom's gradients, curvature and influence against independent float64 computations (on the CPU, and on
CUDA where there is one: the exact side always runs on the CPU)."""

from __future__ import annotations

import copy
from types import SimpleNamespace

import pytest
import torch
from exact import block_diagonal, damped_influence, gauss_newton, kronecker_basis, kronecker_matrix, sequence_gradient
from tiny import TEXTS, char_tokenizer, tiny_gpt2, tiny_llama
from torch import nn

from wherefrom.curvature.fitting import fit_curvature
from wherefrom.data.corpus import TrainingSequence
from wherefrom.data.queries import Query
from wherefrom.models.loading import prepare_for_influence
from wherefrom.models.selection import select_layers
from wherefrom.options import FitOptions, ScoreOptions
from wherefrom.scoring.query_gradients import query_gradients
from wherefrom.scoring.scorer import score

TOKENIZER = char_tokenizer()


def sequences_of(token_lists: list[list[int]]) -> list[TrainingSequence]:
    return [TrainingSequence(i, str(i), 0, len(t), tuple(t)) for i, t in enumerate(token_lists)]


def whole_sequence_queries(token_lists: list[list[int]]) -> list[Query]:
    """Queries whose measurement is the log-probability of the whole sequence after its first token."""
    return [Query(str(i), "", "", tuple(t[:1]), tuple(t[1:])) for i, t in enumerate(token_lists)]


def corpus_tokens(n: int = 6) -> list[list[int]]:
    return [TOKENIZER(t)["input_ids"][:18] for t in TEXTS[:n]]


QUERY_TOKENS = [TOKENIZER("paris is the capital of france")["input_ids"], TOKENIZER("a cat sat")["input_ids"]]
DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.cuda)]


def on(model: nn.Module, device: str) -> nn.Module:
    """The model wherefrom runs: ``model`` itself on the CPU, a copy on another device."""
    return model if device == "cpu" else copy.deepcopy(model).to(device)


def exact_train_grads(model, layers, tokens):
    return torch.stack([sequence_gradient(model, layers, t) for t in tokens])


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("make_model", [tiny_llama, tiny_gpt2], ids=["llama-linear", "gpt2-conv1d-bias"])
def test_contracted_gradients_equal_autograd(make_model, device):
    model = prepare_for_influence(make_model(dtype=torch.float64))
    layers = select_layers(model, "all-linear")
    running = on(model, device)
    tokens = corpus_tokens()
    queries = [Query("q", "", "", tuple(t[:3]), tuple(t[3:])) for t in tokens]  # prompt tokens are not measured
    got = query_gradients(running, select_layers(running, "all-linear"), queries, batch_size=4, quiet=True)
    for i, t in enumerate(tokens):  # padded batches of mixed lengths
        expected = sequence_gradient(model, layers, t, first_target=3)
        flat = torch.cat([got.dense(layer.name)[i].reshape(-1).cpu() for layer in layers])
        torch.testing.assert_close(flat, expected, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("device", DEVICES)
def test_identity_strategy_is_the_exact_gradient_dot_product(device):
    model = prepare_for_influence(tiny_gpt2(dtype=torch.float64))
    layers = select_layers(model, "mlp")
    running = on(model, device)
    tracked = select_layers(running, "mlp")
    tokens = corpus_tokens()
    curvature = fit_curvature(running, tracked, sequences_of(tokens), FitOptions(strategy="identity"), quiet=True)
    result = score(running, TOKENIZER, tracked, curvature, whole_sequence_queries(QUERY_TOKENS), sequences_of(tokens),
                   ScoreOptions(batch_size=3), quiet=True)
    expected = exact_train_grads(model, layers, QUERY_TOKENS) @ exact_train_grads(model, layers, tokens).T
    torch.testing.assert_close(result.scores, expected, rtol=1e-10, atol=1e-12)


class UniformSoftmaxRegression(nn.Module):
    """Embedding → one linear layer → logits, with zero weights, so p(y|x) is uniform for every x.

    Then the Gauss-Newton Hessian is E_x[ā āᵀ] ⊗ (diag p - p pᵀ): exactly a Kronecker product, and K-FAC and
    EK-FAC must both equal it.
    """

    def __init__(self, vocab: int = 7, width: int = 4) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.embed = nn.Embedding(vocab, width).double()
        self.proj = nn.Linear(width, vocab).double()
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def get_input_embeddings(self) -> nn.Module:
        return self.embed

    def forward(self, input_ids, attention_mask=None):  # noqa: ANN001, ANN201 - the HF calling convention
        return SimpleNamespace(logits=self.proj(self.embed(input_ids)))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("strategy", ["kfac", "ekfac"])
def test_kfac_and_ekfac_are_exact_when_the_gauss_newton_hessian_is_a_kronecker_product(strategy, device):
    model = prepare_for_influence(UniformSoftmaxRegression())
    layers = select_layers(model, "proj")
    running = on(model, device)
    tracked = select_layers(running, "proj")
    # One prediction per sequence, every label once per input: the empirical Fisher equals the true Fisher.
    tokens = [[x, y] for x in (1, 2, 3) for y in range(7)]
    G = gauss_newton(model, layers, tokens)
    curvature = fit_curvature(running, tracked, sequences_of(tokens),
                              FitOptions(strategy=strategy, fisher="empirical", batch_size=5), quiet=True)
    queries = [[4, 2], [1, 6], [2, 0]]
    damping = 1e-3
    result = score(running, TOKENIZER, tracked, curvature, whole_sequence_queries(queries), sequences_of(tokens),
                   ScoreOptions(damping=damping, batch_size=4), quiet=True)
    q_grads, z_grads = exact_train_grads(model, layers, queries), exact_train_grads(model, layers, tokens)
    expected = damped_influence(G, q_grads, z_grads, torch.full((G.shape[0],), damping, dtype=torch.float64))
    torch.testing.assert_close(result.scores, expected, rtol=1e-8, atol=1e-10)


def test_sampled_fisher_converges_to_the_gauss_newton_hessian():
    model = prepare_for_influence(UniformSoftmaxRegression())
    layers = select_layers(model, "proj")
    inputs = [[x, 0] for x in (1, 2, 3) for _ in range(2000)]  # labels are sampled, the data's label is ignored
    G = gauss_newton(model, layers, [[1, 0], [2, 0], [3, 0]])
    curvature = fit_curvature(model, layers, sequences_of(inputs),
                              FitOptions(strategy="ekfac", fisher="sampled", batch_size=500, seed=3), quiet=True)
    queries, train = [[4, 2], [1, 6]], [[1, 3], [2, 5], [3, 1]]
    result = score(model, TOKENIZER, layers, curvature, whole_sequence_queries(queries), sequences_of(train),
                   ScoreOptions(damping=1e-2, batch_size=4), quiet=True)
    expected = damped_influence(G, exact_train_grads(model, layers, queries), exact_train_grads(model, layers, train),
                                torch.full((G.shape[0],), 1e-2, dtype=torch.float64))
    assert (result.scores - expected).norm() / expected.norm() < 0.1  # Monte Carlo error ~ 1/sqrt(n): 0.22 at n=100


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("blocks", [1, 2], ids=["dense", "2-blocks"])
def test_ekfac_is_the_best_diagonal_in_the_kfac_eigenbasis(blocks, device):
    """With data labels, EK-FAC's Λ is the exact diagonal of G in K-FAC's eigenbasis, so it is closer to G (in
    Frobenius norm) than K-FAC's Λ_S ⊗ Λ_A in the same basis (George et al. 2018); also for block-diagonal A, S."""
    model = prepare_for_influence(tiny_llama(dtype=torch.float64))
    layers = select_layers(model, "mlp")
    running = on(model, device)
    tokens = corpus_tokens(8)
    z_grads = exact_train_grads(model, layers, tokens)
    fitted = {strategy: fit_curvature(running, select_layers(running, "mlp"), sequences_of(tokens), FitOptions(
        strategy=strategy, fisher="empirical", batch_size=3, factor_blocks=blocks), quiet=True)
              for strategy in ("kfac", "ekfac")}
    lo = 0
    for layer in layers:
        n = layer.shape.out_features * layer.shape.in_dim
        g = z_grads[:, lo:lo + n]
        G = g.T @ g / len(tokens)  # this layer's block of the empirical Fisher
        lo += n
        ekfac = kronecker_matrix(fitted["ekfac"].layers[layer.name])
        kfac = kronecker_matrix(fitted["kfac"].layers[layer.name])
        rotation = kronecker_basis(fitted["ekfac"].layers[layer.name])
        torch.testing.assert_close(ekfac.diagonal().sum(), G.trace())  # the rotation keeps the trace
        torch.testing.assert_close(fitted["ekfac"].layers[layer.name].eigenvalues.reshape(-1).cpu(),
                                   (rotation.T @ G @ rotation).diagonal())
        assert (ekfac - G).norm() <= (kfac - G).norm() + 1e-12, layer.name


def test_ekfac_influence_is_closer_to_the_exact_gauss_newton_influence_than_kfac():
    model = prepare_for_influence(tiny_llama(dtype=torch.float64, attention="eager"))
    layers = select_layers(model, "mlp")
    tokens = corpus_tokens(8)
    sizes = [layer.shape.out_features * layer.shape.in_dim for layer in layers]
    G = block_diagonal(gauss_newton(model, layers, tokens), sizes)  # the true GGN, no label sampling
    damping = 0.1 * float(G.diagonal().mean())
    expected = damped_influence(G, exact_train_grads(model, layers, QUERY_TOKENS), exact_train_grads(model, layers, tokens),
                                torch.full((G.shape[0],), damping, dtype=torch.float64))
    errors = {}
    for strategy in ("kfac", "ekfac", "diagonal"):
        # Each sequence 20 times: every copy draws its own labels, so the sampled Fisher nears its expectation.
        curvature = fit_curvature(model, layers, sequences_of(tokens * 20),
                                  FitOptions(strategy=strategy, fisher="sampled", batch_size=40), quiet=True)
        result = score(model, TOKENIZER, layers, curvature, whole_sequence_queries(QUERY_TOKENS), sequences_of(tokens),
                       ScoreOptions(damping=damping, batch_size=8), quiet=True)
        errors[strategy] = float((result.scores - expected).norm() / expected.norm())
    assert errors["ekfac"] <= errors["kfac"] < errors["diagonal"], errors


def test_a_factor_with_nan_stops_with_an_error_naming_the_layer():
    from wherefrom.errors import WherefromError

    model = prepare_for_influence(tiny_llama())
    with torch.no_grad():
        model.model.layers[1].mlp.up_proj.weight[0, 0] = float("inf")
    layers = select_layers(model, "mlp")
    with pytest.raises(WherefromError, match=r"layer model\.layers\.1\.mlp\.up_proj produced NaN or inf"):
        fit_curvature(model, layers, sequences_of(corpus_tokens()), FitOptions(batch_size=3), quiet=True)


def test_eigendecomposition_refuses_a_non_finite_factor():
    from wherefrom.curvature.eigen import eigendecompose_each
    from wherefrom.errors import WherefromError

    def eigendecompose(name: str, factor: str, matrix: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return next(eigendecompose_each([(name, factor, matrix)], torch.float64))

    bad = torch.eye(3, dtype=torch.float64)
    bad[1, 2] = float("nan")
    with pytest.raises(WherefromError, match="layer blocks.0.fc: factor S holds NaN or inf"):
        eigendecompose("blocks.0.fc", "S", bad)
    values, vectors = eigendecompose("ok", "A", torch.diag(torch.tensor([2.0, -1e-18, 1.0], dtype=torch.float64)))
    assert values.tolist() == [0.0, 1.0, 2.0] and torch.allclose(vectors.abs().sum(0), torch.ones(3, dtype=torch.float64))
