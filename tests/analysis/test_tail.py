"""Power-law tail fit, CCDF and concentration against scipy and closed forms."""

import math
import warnings

import numpy as np
import pytest
import torch
from scipy import stats

from wherefrom.analysis.tail import ccdf, fit_power_law, top_share


def power_law_samples(alpha: float, x_min: float, n: int, seed: int) -> np.ndarray:
    """Inverse-CDF draws from p(x) ∝ x^-alpha on [x_min, inf)."""
    u = np.random.default_rng(seed).random(n)
    return x_min * (1.0 - u) ** (-1.0 / (alpha - 1.0))


def test_recovers_known_power_law_and_does_not_reject_it():
    fit = fit_power_law(power_law_samples(2.5, 1.0, 1000, seed=0), n_bootstrap=100, seed=0)
    assert fit.alpha == pytest.approx(2.5, abs=0.15)
    assert 1.0 <= fit.x_min < 2.0
    assert fit.p_value > 0.1
    assert fit.loglik_ratio > 0.0  # the power law beats the exponential on power-law data


def test_fit_at_chosen_x_min_matches_scipy():
    x = power_law_samples(2.5, 1.0, 600, seed=1)
    fit = fit_power_law(x, n_bootstrap=0)
    tail = x[x >= fit.x_min]
    assert fit.n_tail == tail.size
    # scipy's Pareto with scale x_min has density b x_min^b / x^(b+1): b = alpha - 1.
    b, _, _ = stats.pareto.fit(tail, floc=0.0, fscale=fit.x_min)
    assert fit.alpha == pytest.approx(1.0 + b, rel=1e-6)
    model = stats.pareto(fit.alpha - 1.0, scale=fit.x_min)
    assert fit.ks_distance == pytest.approx(stats.kstest(tail, model.cdf).statistic, rel=1e-9)
    _, scale = stats.expon.fit(tail, floc=fit.x_min)
    assert fit.exponential_rate == pytest.approx(1.0 / scale, rel=1e-9)
    exponential = stats.expon(loc=fit.x_min, scale=scale)
    pointwise = model.logpdf(tail) - exponential.logpdf(tail)
    assert fit.loglik_ratio == pytest.approx(pointwise.sum(), rel=1e-9)
    vuong_z = pointwise.sum() / (pointwise.std() * math.sqrt(tail.size))
    assert fit.loglik_ratio_p == pytest.approx(2.0 * stats.norm.sf(abs(vuong_z)), rel=1e-6)


def test_x_min_minimises_ks_distance_over_all_candidates():
    x = np.concatenate([np.random.default_rng(2).uniform(0.05, 1.0, 150), power_law_samples(2.2, 1.0, 150, seed=3)])
    fit = fit_power_law(x, n_bootstrap=0, min_tail=10, max_candidates=10_000)
    brute = []
    for x_min in np.sort(x):
        tail = x[x >= x_min]
        if tail.size >= 10:
            b = tail.size / np.log(tail / x_min).sum()
            brute.append((stats.kstest(tail, stats.pareto(b, scale=x_min).cdf).statistic, x_min, 1.0 + b))
    distance, x_min, alpha = min(brute)
    assert fit.x_min == x_min
    assert fit.alpha == pytest.approx(alpha, rel=1e-9)
    assert fit.ks_distance == pytest.approx(distance, rel=1e-9)


def test_exponential_data_prefers_exponential_and_fails_goodness_of_fit():
    x = np.random.default_rng(4).exponential(1.0, 2000)
    fit = fit_power_law(x, x_min=float(np.median(x)), n_bootstrap=50, seed=0)
    assert fit.x_min == float(np.median(x))
    assert fit.exponential_rate == pytest.approx(1.0, rel=0.1)
    assert fit.loglik_ratio < 0.0
    assert fit.loglik_ratio_p < 1e-3
    assert fit.p_value < 0.1


def test_exponential_data_with_searched_x_min_leans_exponential():
    fit = fit_power_law(np.random.default_rng(1).exponential(1.0, 5000), n_bootstrap=0)
    assert fit.loglik_ratio < 0.0
    assert fit.loglik_ratio_p < 0.05


def test_negative_and_zero_scores_do_not_enter_the_fit():
    x = power_law_samples(2.5, 1.0, 300, seed=5)
    with_negatives = np.concatenate([x, -np.abs(np.random.default_rng(6).normal(size=500)), np.zeros(20)])
    assert fit_power_law(with_negatives, n_bootstrap=10) == fit_power_law(x, n_bootstrap=10)


def test_accepts_float32_torch_tensor():
    x = power_law_samples(2.5, 1.0, 300, seed=7)
    fit = fit_power_law(torch.tensor(x, dtype=torch.float32), n_bootstrap=0)
    assert fit.alpha == pytest.approx(fit_power_law(x.astype(np.float32), n_bootstrap=0).alpha, rel=1e-12)


def test_too_few_positive_scores_is_a_clear_error():
    with pytest.raises(ValueError, match="at least 10 positive scores, got 3"):
        fit_power_law(np.array([-1.0, 0.5, 2.0, 3.0, -4.0]))
    with pytest.raises(ValueError, match="constant"):
        fit_power_law(np.ones(50))
    with pytest.raises(ValueError, match="lower x_min"):
        fit_power_law(power_law_samples(2.5, 1.0, 100, seed=8), x_min=1e6)


def test_matches_powerlaw_package():
    powerlaw = pytest.importorskip("powerlaw")
    x = power_law_samples(2.5, 1.0, 1000, seed=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fixed = powerlaw.Fit(x, xmin=1.5, verbose=False)
        ratio, ratio_p = fixed.distribution_compare("power_law", "exponential")
        searched = powerlaw.Fit(x, verbose=False)
    ours_fixed = fit_power_law(x, x_min=1.5, n_bootstrap=0)
    assert ours_fixed.alpha == pytest.approx(fixed.power_law.alpha, rel=1e-6)
    assert ours_fixed.loglik_ratio == pytest.approx(ratio, rel=0.02)
    assert ours_fixed.loglik_ratio_p == pytest.approx(ratio_p, rel=0.1)
    ours = fit_power_law(x, n_bootstrap=0, max_candidates=10_000)
    assert ours.alpha == pytest.approx(searched.power_law.alpha, abs=0.05)
    assert ours.x_min == pytest.approx(searched.xmin, rel=0.1)


def test_scores_far_below_a_steep_tail_fit_without_overflow_warnings():
    """A body 33 orders of magnitude below a tail of exponent 15: (x / x_min)^(1 − alpha) of the body is e^1064,
    past float64, and no part of any tail's KS distance (it once warned from inside the fit of a `wherefrom demo
    --sizes` run)."""
    scores = np.r_[np.full(500, 1e-30), power_law_samples(15.0, 1e3, 100, seed=2)]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fit = fit_power_law(scores, n_bootstrap=20, seed=0)
    assert fit.x_min >= 1e3 and fit.alpha == pytest.approx(15.0, rel=0.3) and 0.0 <= fit.p_value <= 1.0


def test_ccdf_of_small_sample():
    x, tail = ccdf(torch.tensor([3.0, 1.0, 2.0, 4.0]))
    np.testing.assert_array_equal(x, [1.0, 2.0, 3.0, 4.0])
    np.testing.assert_allclose(tail, [1.0, 0.75, 0.5, 0.25])
    with pytest.raises(ValueError, match="empty"):
        ccdf(np.array([]))


def test_top_share_of_known_concentration():
    scores = np.concatenate([[50.0], np.full(99, 0.5), [-10.0, -20.0]])  # 102 sequences: top 1% is 2 of them
    assert top_share(scores, 0.01) == pytest.approx((50.0 + 0.5) / (50.0 + 99 * 0.5))
    assert top_share(scores[:100], 0.01) == pytest.approx(50.0 / (50.0 + 99 * 0.5))
    assert top_share(np.array([1.0, 1.0, 1.0, 1.0]), 0.5) == pytest.approx(0.5)
    assert top_share(np.array([3.0, -1.0, 1.0]), 1.0) == pytest.approx(1.0)


def test_top_share_errors():
    with pytest.raises(ValueError, match="no positive|at least one positive"):
        top_share(np.array([-1.0, 0.0]))
    with pytest.raises(ValueError, match="fraction"):
        top_share(np.array([1.0]), 0.0)


def test_score_matrix_instead_of_one_query_is_a_clear_error():
    matrix = np.abs(np.random.default_rng(9).normal(size=(2, 50)))
    for analysis in (fit_power_law, top_share, ccdf):
        with pytest.raises(ValueError, match=r"1-D\), got shape \(2, 50\)"):
            analysis(matrix)
