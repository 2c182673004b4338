"""Spurious-sequence flag: ||a||_2 / ||a||_1 of per-token influence."""

import numpy as np
import pytest
import torch

from wherefrom.analysis.spurious import concentration_p_values, flag_spurious, spurious_sequences, token_norm_ratios
from wherefrom.scoring.results import QueryInfo, ScoreResult, SequenceInfo

# Per-token influence of four sequences (token 0 never predicted, so 0) on one query.
ONE_TOKEN = [0.0, 0.0, 5.0, 0.0]  # all influence on one token: ratio 1
FLAT = [0.0, 1.0, -1.0, 1.0, -1.0, 1.0, 1.0, 1.0, -1.0, 1.0]  # nine equal magnitudes: ratio 1/3
TWO_TOKENS = [0.0, 2.0, 2.0]  # ratio 1/sqrt(2) ≈ 0.707
THREE_TOKENS = [0.0, 1.0, 1.0, 1.0]  # ratio 1/sqrt(3) ≈ 0.577
SEQUENCES = [ONE_TOKEN, FLAT, TWO_TOKENS, THREE_TOKENS]


def make_result(per_query: list[list[list[float]]], scores: list[list[float]]) -> ScoreResult:
    lengths = [len(s) for s in per_query[0]]
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    return ScoreResult(
        scores=torch.tensor(scores, dtype=torch.float32),
        sequences=[SequenceInfo(row=i, record_id=str(i), start=0, end=n, text="") for i, n in enumerate(lengths)],
        queries=[
            QueryInfo(index=q, query_id=str(q), prompt="", completion="", prompt_ids=[], completion_ids=[])
            for q in range(len(per_query))
        ],
        layer_names=[],
        per_token=torch.tensor(np.array([np.concatenate(seqs) for seqs in per_query]), dtype=torch.float32),
        token_offsets=torch.tensor(offsets, dtype=torch.int64),
    )


def brute_ratio(a: list[float]) -> float:
    return float(np.linalg.norm(a, 2) / np.linalg.norm(a, 1))


def test_ratios_match_norms_per_slice():
    rng = np.random.default_rng(0)
    lengths = [5, 0, 1, 12, 3]
    per_token = rng.normal(size=(2, sum(lengths)))
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    ratios = token_norm_ratios(per_token, offsets)
    assert ratios.shape == (2, 5)
    for q in range(2):
        for n in range(5):
            segment = per_token[q, offsets[n] : offsets[n + 1]]
            if segment.size == 0:
                assert np.isnan(ratios[q, n])
            else:
                assert ratios[q, n] == pytest.approx(brute_ratio(segment), rel=1e-12)


def test_one_token_sequence_is_flagged_and_flat_is_not_by_the_papers_rule_alone():
    result = make_result([SEQUENCES], [[1.0, 2.0, 3.0, 4.0]])
    flagged = spurious_sequences(result, level=1.0)
    assert [(s.query, s.row) for s in flagged[0]] == [(0, 0), (0, 2)]  # highest ratio first
    assert flagged[0][0].ratio == pytest.approx(1.0)
    assert flagged[0][1].ratio == pytest.approx(1 / np.sqrt(2), rel=1e-6)
    ratios = token_norm_ratios(result.per_token, result.token_offsets)
    assert ratios[0, 1] == pytest.approx(1 / 3, rel=1e-6)
    assert ratios[0, 3] == pytest.approx(1 / np.sqrt(3), rel=1e-6)


def test_threshold_is_a_parameter():
    ratios = token_norm_ratios(np.concatenate(SEQUENCES), np.cumsum([0] + [len(s) for s in SEQUENCES]))
    assert [s.row for s in flag_spurious(ratios, threshold=0.75)[0]] == [0]
    assert [s.row for s in flag_spurious(ratios, threshold=0.5)[0]] == [0, 2, 3]


def test_top_k_restricts_to_each_querys_top_sequences():
    flipped = [[-x for x in s] for s in SEQUENCES]  # sign does not change the ratio
    result = make_result([SEQUENCES, flipped], [[1.0, 2.0, 3.0, 4.0], [4.0, 3.0, 2.0, 1.0]])
    flagged = spurious_sequences(result, top_k=2, level=1.0)
    assert [s.row for s in flagged[0]] == [2]  # top-2 of query 0: rows 3, 2
    assert [s.row for s in flagged[1]] == [0]  # top-2 of query 1: rows 0, 1
    assert flagged[1][0].query == 1


def test_missing_or_mismatched_per_token_scores_are_clear_errors():
    result = make_result([SEQUENCES], [[1.0, 2.0, 3.0, 4.0]])
    with pytest.raises(ValueError, match="no per-token scores"):
        spurious_sequences(ScoreResult(result.scores, result.sequences, result.queries, []))
    with pytest.raises(ValueError, match="ends at 5"):
        token_norm_ratios(np.zeros((1, 6)), [0, 2, 5])
    with pytest.raises(ValueError, match="non-decreasing"):
        token_norm_ratios(np.zeros((1, 6)), [0, 4, 2, 6])


def test_the_concentration_p_value_is_the_exact_tail_probability_of_same_length_draws():
    # Pool (nonzero tokens of all sequences): nine 1s and one 10. For two tokens drawn with replacement the
    # ratio is 1/sqrt(2) (two equal values) or sqrt(101)/11 ≈ 0.914 (a 1 and the 10); the pairs are enumerated.
    sequences = [[0.0, 1.0, 1.0]] * 4 + [[0.0, 1.0, 10.0], [0.0, 1.0]]
    per_token = np.concatenate(sequences)
    offsets = np.cumsum([0] + [len(s) for s in sequences])
    pool = np.abs(per_token[per_token != 0])
    pairs = [(a, b) for a in pool for b in pool]
    exact_tail = np.mean([np.hypot(a, b) / (a + b) >= np.sqrt(101) / 11 - 1e-12 for a, b in pairs])  # 0.18
    draws = 4000
    shares = concentration_p_values(per_token, offsets, draws=draws)
    sd = np.sqrt(exact_tail * (1 - exact_tail) / draws)
    assert abs(shares[0, 4] - exact_tail) < 4 * sd + 1 / draws
    assert shares[0, 0] == 1.0  # every pair is at least as concentrated as two equal values
    assert shares[0, 5] == 1.0  # one predicted token: any single draw is as concentrated


def test_short_sequences_are_not_flagged_for_being_short_but_a_lone_outlier_token_is():
    rng = np.random.default_rng(0)
    # A corpus of short sequences, each with one token carrying most of its influence (like facts whose answer
    # token carries it): the paper's rule flags every one, though such concentration is what this corpus does.
    short = [[0.0, 5.0 * rng.uniform(0.8, 1.2), *rng.uniform(0.3, 0.6, 2)] for _ in range(60)]
    # One long sequence whose influence sits on a single token among 40: unlike any 40 tokens of the corpus.
    outlier = [0.0, *rng.uniform(0.01, 0.05, 39), 20.0]
    sequences = [*short, outlier]
    result = make_result([sequences], [list(range(len(sequences)))])
    ratios = token_norm_ratios(result.per_token, result.token_offsets)[0]
    assert (ratios > 2 / 3).all()  # the paper's rule alone flags them all
    assert len(spurious_sequences(result, level=1.0)[0]) == len(sequences)
    shares = concentration_p_values(result.per_token, result.token_offsets)[0]
    assert shares[:60].min() > 0.05  # a short one's concentration is common in same-length corpus draws
    flagged = spurious_sequences(result)[0]
    assert [s.row for s in flagged] == [60] and flagged[0].p_value == pytest.approx(1 / 1001)


def test_the_null_pool_holds_only_the_tokens_of_the_pooled_sequences():
    """With token shares for some sequences only (--per-token-top), a query's pool is their tokens: the same
    p-values as a matrix holding only those sequences (the others' zeros never enter the pool)."""
    rng = np.random.default_rng(3)
    lengths = [5, 7, 4, 6]
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    per_token = rng.normal(size=(1, offsets[-1]))
    per_token[:, offsets[1]:offsets[2]] = 0.0  # sequences 1 and 3 have no token shares
    per_token[:, offsets[3]:offsets[4]] = 0.0
    kept = np.concatenate([per_token[:, offsets[0]:offsets[1]], per_token[:, offsets[2]:offsets[3]]], axis=1)
    alone = concentration_p_values(kept, [0, 5, 9], rows=[[0, 1]], draws=500)
    pooled = concentration_p_values(per_token, offsets, rows=[[0, 2]], draws=500, pooled=[[0, 2]])
    np.testing.assert_array_equal(pooled[0, [0, 2]], alone[0])
    assert np.isnan(pooled[0, [1, 3]]).all()
    assert not np.array_equal(concentration_p_values(per_token, offsets, rows=[[0, 2]], draws=500)[0, [0, 2]],
                              alone[0])  # zeros in the pool would change them
