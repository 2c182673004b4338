"""Cross-query comparison against scipy.stats and hand-computed ranks."""

import numpy as np
import pytest
import torch
from scipy import stats

from wherefrom.analysis.compare import cross_ranks, score_correlation


def test_correlations_match_scipy_with_ties():
    rng = np.random.default_rng(0)
    a = rng.normal(size=500)
    b = 0.6 * a + rng.normal(size=500)
    tied_a, tied_b = np.round(a), np.round(b * 2)  # many ties for the rank correlation
    for x, y in [(a, b), (tied_a, tied_b), (a, tied_b)]:
        result = score_correlation(torch.tensor(x, dtype=torch.float64), y)
        assert result.pearson == pytest.approx(stats.pearsonr(x, y).statistic, rel=1e-10)
        assert result.spearman == pytest.approx(stats.spearmanr(x, y).statistic, rel=1e-10)


def test_constant_scores_give_nan():
    result = score_correlation(np.ones(5), np.arange(5.0))
    assert np.isnan(result.pearson) and np.isnan(result.spearman)


def test_cross_ranks_by_hand():
    source = np.array([5.0, 1.0, 3.0, 4.0])
    target = np.array([1.0, 4.0, 3.0, 2.0])
    ranks = cross_ranks(source, target, k=2)
    np.testing.assert_array_equal(ranks.rows, [0, 3])
    np.testing.assert_array_equal(ranks.source_ranks, [1, 2])
    np.testing.assert_array_equal(ranks.target_ranks, [4, 3])
    tied = cross_ranks(source, np.array([2.0, 2.0, 1.0, 0.0]), k=10)
    np.testing.assert_array_equal(tied.rows, [0, 3, 2, 1])
    np.testing.assert_array_equal(tied.target_ranks, [1, 4, 3, 1])


def test_mismatched_inputs_are_clear_errors():
    with pytest.raises(ValueError, match="differ in length"):
        score_correlation(np.zeros(3), np.zeros(4))
    with pytest.raises(ValueError, match="at least 2"):
        score_correlation(np.zeros(1), np.zeros(1))
    with pytest.raises(ValueError, match="k must be"):
        cross_ranks(np.zeros(3), np.zeros(3), k=0)
    with pytest.raises(ValueError, match="1-D"):
        score_correlation(np.zeros((2, 3)), np.zeros((2, 3)))
