"""The block-diagonal approximation within each layer (--factor-blocks, Grosse et al. appendix A) against
independent float64 computations: covariances from plain hooks and autograd, influence from a dense solve."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from exact import damped_influence, sequence_gradient
from test_ground_truth import (
    TOKENIZER,
    UniformSoftmaxRegression,
    corpus_tokens,
    sequences_of,
    whole_sequence_queries,
)
from tiny import TEXTS, save_model_dir, tiny_gpt2, tiny_llama, write_jsonl

from wherefrom.curvature.blocks import BlockDiagonal, block_sizes
from wherefrom.curvature.covariance import CovarianceAccumulator
from wherefrom.curvature.fitting import eigendecompose_all, fit_curvature
from wherefrom.curvature.preconditioner import LayerCurvature
from wherefrom.engine.distributed import World
from wherefrom.engine.execution import Execution
from wherefrom.engine.passes import Checkpoints, PassPlan, run_pass
from wherefrom.engine.stream import Labels
from wherefrom.errors import WherefromError
from wherefrom.models.loading import prepare_for_influence
from wherefrom.models.selection import select_layers
from wherefrom.options import FitOptions, ScoreOptions
from wherefrom.scoring.scorer import score


def block_diagonal_part(matrix: torch.Tensor, blocks: int) -> torch.Tensor:
    """Zero every entry of ``matrix`` outside its ``blocks`` contiguous diagonal blocks."""
    out = torch.zeros_like(matrix)
    lo = 0
    for size in block_sizes(matrix.shape[0], blocks):
        out[lo:lo + size, lo:lo + size] = matrix[lo:lo + size, lo:lo + size]
        lo += size
    return out


def exact_covariances(model, layers, token_lists):
    """A = mean ā āᵀ and S = mean Ds Dsᵀ over predicting tokens (data labels), from plain hooks and autograd."""
    inputs, outputs = {}, {}

    def keeper(name):
        def keep(_module, args, out):
            inputs[name], outputs[name] = args[0], out
        return keep

    handles = [layer.module.register_forward_hook(keeper(layer.name)) for layer in layers]
    A = {layer.name: 0 for layer in layers}
    S = {layer.name: 0 for layer in layers}
    n_tokens = 0
    for ids in token_lists:
        x = torch.tensor([ids])
        embeds = model.get_input_embeddings()(x).detach().requires_grad_(True)
        logits = model(inputs_embeds=embeds).logits[0]
        loss = F.cross_entropy(logits[:-1], x[0, 1:], reduction="sum")
        grads = torch.autograd.grad(loss, [outputs[layer.name] for layer in layers])
        for layer, grad in zip(layers, grads):
            a, ds = inputs[layer.name][0, :-1].detach(), grad[0, :-1]  # the last position predicts nothing
            A[layer.name] = A[layer.name] + a.T @ a
            S[layer.name] = S[layer.name] + ds.T @ ds
        n_tokens += len(ids) - 1
    for handle in handles:
        handle.remove()
    return {name: value / n_tokens for name, value in A.items()}, {name: value / n_tokens for name, value in S.items()}


def dense(Q):
    return Q.dense() if isinstance(Q, BlockDiagonal) else Q


def test_fitted_factors_are_the_block_diagonal_parts_of_the_exact_covariances():
    model = prepare_for_influence(tiny_llama(dtype=torch.float64))
    layers = select_layers(model, "mlp")  # widths 16 and 32: three blocks are uneven (6, 5, 5 and 11, 11, 10)
    tokens = corpus_tokens()
    blocks = 3
    plan = PassPlan(tokens, [1] * len(tokens), 4, 512)
    execution = Execution.of(model)
    covariance = run_pass(model, layers, plan, Labels("data"), "covariance", "", lambda: CovarianceAccumulator(
        layers, execution, blocks), Checkpoints(None, ""), execution, quiet=True)
    eigen = eigendecompose_all(covariance, World(), torch.float64, quiet=True)
    A, S = exact_covariances(model, layers, tokens)
    for layer in layers:
        lam_A, Q_A, lam_S, Q_S = eigen[layer.name]
        assert isinstance(Q_A, BlockDiagonal) and len(Q_A.blocks) == blocks
        assert [b.shape[0] for b in Q_S.blocks] == block_sizes(layer.shape.out_features, blocks)
        torch.testing.assert_close(Q_A.dense() @ torch.diag(lam_A) @ Q_A.dense().T,
                                   block_diagonal_part(A[layer.name], blocks), rtol=1e-9, atol=1e-12)
        torch.testing.assert_close(Q_S.dense() @ torch.diag(lam_S) @ Q_S.dense().T,
                                   block_diagonal_part(S[layer.name], blocks), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("blocks", [2, 3])
def test_kfac_with_blocks_is_the_exact_influence_of_the_block_diagonal_kronecker_matrix(blocks):
    model = prepare_for_influence(UniformSoftmaxRegression())
    layers = select_layers(model, "proj")  # ā = (embedding, 1): 5 inputs; 7 outputs
    tokens = [[x, y] for x in (1, 2, 3) for y in range(7)]
    curvature = fit_curvature(model, layers, sequences_of(tokens), FitOptions(
        strategy="kfac", fisher="empirical", batch_size=5, factor_blocks=blocks), quiet=True)
    # One predicting token per sequence (τ = 1): G = S ⊗ A in row-major vec(W̄) order, here block-diagonalised.
    with torch.no_grad():
        a = torch.cat([model.embed(torch.tensor([x for x, _ in tokens])), torch.ones(len(tokens), 1,
                                                                                    dtype=torch.float64)], dim=1)
        p = torch.softmax(model.proj(model.embed(torch.tensor([x for x, _ in tokens]))), dim=-1)
        ds = p - F.one_hot(torch.tensor([y for _, y in tokens]), 7).double()
    A, S = a.T @ a / len(tokens), ds.T @ ds / len(tokens)
    G = torch.kron(block_diagonal_part(S, blocks), block_diagonal_part(A, blocks))
    queries, damping = [[4, 2], [1, 6], [2, 0]], 1e-3
    result = score(model, TOKENIZER, layers, curvature, whole_sequence_queries(queries), sequences_of(tokens),
                   ScoreOptions(damping=damping, batch_size=4), quiet=True)
    q_grads = torch.stack([sequence_gradient(model, layers, t) for t in queries])
    z_grads = torch.stack([sequence_gradient(model, layers, t) for t in tokens])
    expected = damped_influence(G, q_grads, z_grads, torch.full((G.shape[0],), damping, dtype=torch.float64))
    torch.testing.assert_close(result.scores, expected, rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("make_model", [tiny_llama, tiny_gpt2], ids=["llama", "gpt2-bias"])
def test_block_diagonal_bases_score_like_their_dense_matrices(make_model):
    """Preconditioning, contraction and self-influence give the same numbers with the blocks as with the dense
    block-diagonal matrices they stand for; self-influence is the pairwise diagonal."""
    model = prepare_for_influence(make_model(dtype=torch.float64))
    layers = select_layers(model, "mlp")
    tokens = corpus_tokens()
    fitted = fit_curvature(model, layers, sequences_of(tokens),
                           FitOptions(strategy="ekfac", batch_size=3, factor_blocks=2, seed=1), quiet=True)
    options = ScoreOptions(batch_size=3, self_influence=True, per_token=True)
    blocked = score(model, TOKENIZER, layers, fitted, whole_sequence_queries(tokens), sequences_of(tokens),
                    options, quiet=True)
    fitted.layers = {name: LayerCurvature(dense(c.Q_A), dense(c.Q_S), c.eigenvalues) for name, c in fitted.layers.items()}
    expected = score(model, TOKENIZER, layers, fitted, whole_sequence_queries(tokens), sequences_of(tokens),
                     options, quiet=True)
    torch.testing.assert_close(blocked.scores, expected.scores, rtol=1e-9, atol=1e-10)
    torch.testing.assert_close(blocked.per_token, expected.per_token, rtol=1e-9, atol=1e-10)
    torch.testing.assert_close(blocked.self_influence, blocked.scores.diagonal(), rtol=1e-9, atol=1e-9)


def test_one_block_is_the_plain_dense_fit():
    model = prepare_for_influence(tiny_llama(dtype=torch.float64))
    layers = select_layers(model, "mlp")
    fitted = fit_curvature(model, layers, sequences_of(corpus_tokens()), FitOptions(batch_size=3, factor_blocks=1),
                           quiet=True)
    assert all(isinstance(c.Q_A, torch.Tensor) and isinstance(c.Q_S, torch.Tensor) for c in fitted.layers.values())


@pytest.mark.parametrize("blocks", [0, 17])
def test_a_block_count_the_layers_cannot_hold_is_refused(blocks):
    model = prepare_for_influence(tiny_llama())
    layers = select_layers(model, "mlp")  # the narrowest width is 16
    with pytest.raises(WherefromError, match="--factor-blocks"):
        fit_curvature(model, layers, sequences_of(corpus_tokens()), FitOptions(factor_blocks=blocks), quiet=True)


def test_blocks_are_saved_loaded_and_scored(tmp_path):
    from wherefrom.api import fit
    from wherefrom.api import score as score_run

    save_model_dir(tiny_llama(), tmp_path / "model")
    write_jsonl(tmp_path / "corpus.jsonl", [{"text": t} for t in TEXTS])
    write_jsonl(tmp_path / "queries.jsonl", [{"prompt": "paris is the", "completion": " capital of france."}])
    run = fit(tmp_path / "model", tmp_path / "corpus.jsonl", tmp_path / "run",
              FitOptions(batch_size=4, factor_blocks=4), quiet=True)
    assert run.manifest["options"]["factor_blocks"] == 4
    layer = run.curvature.layers["model.layers.0.mlp.down_proj"]
    assert isinstance(layer.Q_A, BlockDiagonal) and [b.shape for b in layer.Q_A.blocks] == [(8, 8)] * 4
    torch.testing.assert_close(layer.Q_A.dense().T @ layer.Q_A.dense(), torch.eye(32), rtol=0, atol=1e-5)
    result = score_run(tmp_path / "run", tmp_path / "queries.jsonl", options=ScoreOptions(batch_size=4), quiet=True)
    assert result.scores.shape == (1, len(TEXTS)) and torch.isfinite(result.scores).all()


def test_ranks_share_block_diagonal_eigendecompositions():
    """Each rank decomposes its own layers and sends zeros for the others; the sum over ranks (what the
    all-reduce forms) is every layer's decomposition, blocks included."""
    from dataclasses import dataclass

    from wherefrom.curvature.blocks import basis_tensors

    @dataclass(frozen=True)
    class UnsummedWorld(World):
        def sum(self, tensors):
            return tensors  # each rank's own part, to be added up below

    model = prepare_for_influence(tiny_llama(dtype=torch.float64))
    layers = select_layers(model, "mlp")
    tokens = corpus_tokens()
    plan = PassPlan(tokens, [1] * len(tokens), 4, 512)

    def decompose(world):
        execution = Execution.of(model)
        covariance = run_pass(model, layers, plan, Labels("data"), "covariance", "", lambda: CovarianceAccumulator(
            layers, execution, 2), Checkpoints(None, ""), execution, quiet=True)
        return eigendecompose_all(covariance, world, torch.float64, quiet=True)

    single, parts = decompose(World()), [decompose(UnsummedWorld(rank, 2)) for rank in (0, 1)]
    for name, expected in single.items():
        for i, value in enumerate(expected):
            got = [basis_tensors(part[name][i]) for part in parts]
            for j, tensor in enumerate(basis_tensors(value)):
                torch.testing.assert_close(got[0][j] + got[1][j], tensor, rtol=0, atol=0)
