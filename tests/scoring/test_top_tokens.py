"""--per-token-top: token shares for each query's N best sequences only, by a second pass over them.

Checked against two independent computations: the per-token scores of every sequence (the first pass's token
terms), and the scores themselves, which in this mode come from per-sequence gradients, not from token terms."""

from __future__ import annotations

import json

import pytest
import torch
from test_ground_truth import QUERY_TOKENS, TOKENIZER, corpus_tokens, sequences_of, whole_sequence_queries
from tiny import tiny_llama

from wherefrom.curvature.fitting import fit_curvature
from wherefrom.models.loading import prepare_for_influence
from wherefrom.models.selection import select_layers
from wherefrom.options import FitOptions, ScoreOptions
from wherefrom.outputs.sections import query_sections
from wherefrom.scoring.results import ScoreResult
from wherefrom.scoring.scorer import score

TOP = 2


@pytest.fixture(scope="module")
def scored():
    """The same scores with token shares of every sequence, and of each query's TOP best only."""
    model = prepare_for_influence(tiny_llama(dtype=torch.float64))
    layers = select_layers(model, "mlp")
    sequences = sequences_of(corpus_tokens())
    curvature = fit_curvature(model, layers, sequences, FitOptions(fisher="empirical", batch_size=3), quiet=True)
    queries = whole_sequence_queries(QUERY_TOKENS)

    def run(**options: object) -> ScoreResult:
        return score(model, TOKENIZER, layers, curvature, queries, sequences,
                     ScoreOptions(batch_size=4, per_token=True, normalize=True, **options), quiet=True)

    return run(), run(per_token_top=TOP)


def test_the_top_sequences_by_the_ranking_get_the_token_shares_of_the_full_scoring(scored):
    every, top = scored
    torch.testing.assert_close(top.scores, every.scores, rtol=1e-9, atol=1e-12)
    for q in range(len(QUERY_TOKENS)):
        best = torch.topk(every.cosine[q], TOP).indices.tolist()  # ranked by cosine: the scores are normalised
        assert sorted(top.token_rows[q].tolist()) == sorted(best)
        for row in range(len(every.sequences)):
            if row in best:
                torch.testing.assert_close(top.token_scores(q, row), every.token_scores(q, row), rtol=1e-9,
                                           atol=1e-12)
                torch.testing.assert_close(top.token_scores(q, row).sum(), top.scores[q, row], rtol=1e-9, atol=1e-12)
            else:
                assert not top.has_token_scores(q, row)
                lo, hi = int(top.token_offsets[row]), int(top.token_offsets[row + 1])
                assert not top.per_token[q, lo:hi].any()
                with pytest.raises(ValueError, match="--per-token-top"):
                    top.token_scores(q, row)


def test_the_token_rows_survive_saving_and_only_they_carry_tokens_in_results(scored, tmp_path):
    _, top = scored
    loaded = ScoreResult.load(top.save(tmp_path / "s", top_k=4))
    assert torch.equal(loaded.token_rows, top.token_rows) and torch.equal(loaded.per_token, top.per_token.float())
    for summary in map(json.loads, (tmp_path / "s" / "results.jsonl").read_text().splitlines()):
        with_tokens = {entry["row"] for entry in summary["top"] if "per_token" in entry}
        assert with_tokens == set(top.token_rows[summary["query"]].tolist())
    for section in query_sections(loaded, top_k=4, n_bootstrap=0):
        shown = {t.row for t in section.top if t.tokens is not None}
        assert shown == set(loaded.token_rows[section.query.index].tolist())
