"""Scores must not depend on how the work is cut up, and their decompositions must add up."""

from __future__ import annotations

import pytest
import torch
from test_ground_truth import QUERY_TOKENS, TOKENIZER, corpus_tokens, sequences_of, whole_sequence_queries
from tiny import tiny_gpt2, tiny_llama

from wherefrom.curvature.fitting import fit_curvature
from wherefrom.models.loading import prepare_for_influence
from wherefrom.models.selection import select_layers
from wherefrom.options import FitOptions, ScoreOptions
from wherefrom.scoring.scorer import score


def run(model, layers, tokens, strategy="ekfac", fit_batch=3, score_options=ScoreOptions(batch_size=3),
        queries=QUERY_TOKENS):
    curvature = fit_curvature(model, layers, sequences_of(tokens),
                              FitOptions(strategy=strategy, fisher="sampled", batch_size=fit_batch, seed=7), quiet=True)
    return score(model, TOKENIZER, layers, curvature, whole_sequence_queries(queries), sequences_of(tokens),
                 score_options, quiet=True)


@pytest.fixture(scope="module")
def llama():
    model = prepare_for_influence(tiny_llama(dtype=torch.float64))
    return model, select_layers(model, "mlp")


@pytest.mark.parametrize("strategy", ["ekfac", "kfac", "diagonal"])
def test_batch_size_and_padding_do_not_change_scores(llama, strategy):
    model, layers = llama
    tokens = corpus_tokens()  # mixed lengths: batches of 4 are padded, batches of 1 are not
    one_by_one = run(model, layers, tokens, strategy, fit_batch=1, score_options=ScoreOptions(batch_size=1))
    padded = run(model, layers, tokens, strategy, fit_batch=4, score_options=ScoreOptions(batch_size=4))
    torch.testing.assert_close(padded.scores, one_by_one.scores, rtol=1e-9, atol=1e-9)


def test_module_order_does_not_change_scores(llama):
    model, layers = llama
    tokens = corpus_tokens()
    forward = run(model, layers, tokens, score_options=ScoreOptions(batch_size=3, per_layer=True))
    backward = run(model, layers[::-1], tokens, score_options=ScoreOptions(batch_size=3, per_layer=True))
    torch.testing.assert_close(backward.scores, forward.scores, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(backward.per_layer.flip(0), forward.per_layer, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("make_model", [tiny_llama, tiny_gpt2], ids=["llama", "gpt2"])
def test_per_layer_and_per_token_scores_sum_to_the_totals(make_model):
    model = prepare_for_influence(make_model(dtype=torch.float64))
    layers = select_layers(model, "all-linear")
    tokens = corpus_tokens()
    result = run(model, layers, tokens, score_options=ScoreOptions(batch_size=4, per_layer=True, per_token=True))
    torch.testing.assert_close(result.per_layer.sum(0), result.scores, rtol=1e-10, atol=1e-10)
    for q in range(len(QUERY_TOKENS)):
        for n, t in enumerate(tokens):
            token_scores = result.token_scores(q, n)
            assert token_scores.shape == (len(t),) and token_scores[0] == 0  # token 0 is never predicted
            torch.testing.assert_close(token_scores.sum(), result.scores[q, n], rtol=1e-10, atol=1e-10)


def test_self_influence_equals_the_pairwise_diagonal(llama):
    model, layers = llama
    tokens = corpus_tokens()
    result = run(model, layers, tokens, queries=tokens, score_options=ScoreOptions(batch_size=3, self_influence=True))
    torch.testing.assert_close(result.self_influence, result.scores.diagonal(), rtol=1e-9, atol=1e-9)
    assert (result.self_influence > 0).all()


def test_low_rank_queries_converge_to_full_rank(llama):
    model, layers = llama
    tokens = corpus_tokens()
    full = run(model, layers, tokens)
    errors = []
    for rank in (1, 2, 4, 8, 16):  # 16 = min(out, in) of every tracked layer: exact
        low = run(model, layers, tokens, score_options=ScoreOptions(batch_size=3, query_rank=rank))
        errors.append(float((low.scores - full.scores).norm() / full.scores.norm()))
    assert all(later <= earlier + 1e-12 for earlier, later in zip(errors, errors[1:])), errors
    assert errors[-1] < 1e-10, errors
    per_token = run(model, layers, tokens, score_options=ScoreOptions(batch_size=3, query_rank=16, per_token=True))
    torch.testing.assert_close(per_token.scores, full.scores, rtol=1e-9, atol=1e-9)
