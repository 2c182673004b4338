"""The precision policy: a bfloat16 model keeps float32 sums, bases and preconditioned queries, and its scores
agree with the float32 run's."""

from __future__ import annotations

import copy

import torch
from test_ground_truth import QUERY_TOKENS, TOKENIZER, corpus_tokens, sequences_of, whole_sequence_queries
from tiny import tiny_llama

from wherefrom.curvature.covariance import CovarianceAccumulator
from wherefrom.curvature.fitting import fit_curvature
from wherefrom.engine.execution import Execution
from wherefrom.models.loading import prepare_for_influence
from wherefrom.models.selection import select_layers
from wherefrom.options import FitOptions, ScoreOptions
from wherefrom.scoring.query_gradients import query_gradients
from wherefrom.scoring.scorer import preconditioned_queries, score
from wherefrom.solvers.damping import pearson_rows

# 1 − Pearson of bf16 against float32 scores per query, at most: 7.6e-6 measured on this test's model
# (docs/precision.md), so a bound 10 times that catches a result 10 times worse.
BF16_ONE_MINUS_PEARSON = 7.6e-5
BF16_PEARSON = 1 - BF16_ONE_MINUS_PEARSON


def models_in(*dtypes: torch.dtype) -> list[torch.nn.Module]:
    """One random tiny Llama cast to each dtype (the same weights, rounded)."""
    base = tiny_llama(layers=3, hidden=32)
    return [prepare_for_influence(copy.deepcopy(base).to(dtype)) for dtype in dtypes]


def test_bfloat16_keeps_sums_bases_and_preconditioned_queries_in_float32():
    (model,) = models_in(torch.bfloat16)
    layers = select_layers(model, "mlp")
    execution = Execution.of(model)
    assert (execution.dtype, execution.accumulation_dtype) == (torch.bfloat16, torch.float32)
    sums = CovarianceAccumulator(layers, execution).sums
    assert {t.dtype for key, t in sums.items() if key.startswith(("A/", "S/"))} == {torch.float32}
    curvature = fit_curvature(model, layers, sequences_of(corpus_tokens()), FitOptions(batch_size=4), quiet=True)
    for fitted in curvature.layers.values():
        assert (fitted.Q_A.dtype, fitted.Q_S.dtype, fitted.eigenvalues.dtype) == (torch.float32,) * 3
    gradients = query_gradients(model, layers, whole_sequence_queries(QUERY_TOKENS), 2, quiet=True)
    assert {t.dtype for pair in gradients.factors.values() for t in pair} == {torch.bfloat16}  # ā, Ds: model dtype
    V = preconditioned_queries(curvature, gradients, ScoreOptions(), execution)
    assert {v.dtype for v in V.values()} == {torch.float32}


def test_bfloat16_scores_correlate_with_float32_scores_per_query():
    """Fit and score the same model in float32 and in bfloat16 (sampled Fisher, as by default)."""
    tokens = corpus_tokens(8)
    scores = []
    for model in models_in(torch.float32, torch.bfloat16):
        layers = select_layers(model, "mlp")
        curvature = fit_curvature(model, layers, sequences_of(tokens * 4), FitOptions(batch_size=8), quiet=True)
        result = score(model, TOKENIZER, layers, curvature, whole_sequence_queries(QUERY_TOKENS + tokens[:4]),
                       sequences_of(tokens), ScoreOptions(batch_size=4), quiet=True)
        assert result.scores.dtype == torch.float32
        scores.append(result.scores)
    pearson = pearson_rows(scores[1], scores[0])
    assert (1 - pearson).max() <= BF16_ONE_MINUS_PEARSON, pearson
