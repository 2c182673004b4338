"""Heavy tails and concentration of influence (Grosse et al. 2023, sec. 5.2).

The upper tail of one query's scores is fitted with a continuous power law following Clauset, Shalizi & Newman
(2009, "Power-law distributions in empirical data"):

    p(x) = (alpha - 1) / x_min * (x / x_min)^-alpha    for x >= x_min,   so   1 - CDF(x) = (x / x_min)^-(alpha - 1).

alpha is the exponent of the density (the convention of Clauset et al. and of the ``powerlaw`` package); the
log-log CCDF plot has slope -(alpha - 1). For a fixed x_min the maximum-likelihood exponent is
alpha = 1 + n / sum(log(x_i / x_min)) over the n tail values; x_min is the candidate whose fitted tail has the
smallest Kolmogorov-Smirnov distance to the data.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from wherefrom.analysis._arrays import as_vector


@dataclass(frozen=True)
class PowerLawFit:
    """A power-law fit of the positive upper tail of a score distribution, with its tests.

    ``p_value``: goodness of fit by semi-parametric bootstrap, the share of synthetic power-law data sets whose
    own best fit is further (in KS distance) from them than this fit is from the data; small (< 0.1) rejects the
    power law. NaN when no bootstrap was run.
    ``exponential_rate``: lambda of the exponential tail lambda * exp(-lambda (x - x_min)) fitted to the same values.
    ``loglik_ratio``: R = sum over the tail of log p_power(x) - log p_exponential(x); R > 0 favours the power law.
    ``loglik_ratio_p``: Vuong's two-sided p-value for the sign of R; when it is large, neither fit is preferred.
    """

    alpha: float
    x_min: float
    n_tail: int
    ks_distance: float
    p_value: float
    exponential_rate: float
    loglik_ratio: float
    loglik_ratio_p: float


_KS_TABLE = 1 << 16  # values in a [candidates, values] table of KS gaps: 512 KB, under the mmap threshold (allocator.py)


@dataclass(frozen=True)
class _TailFit:
    alpha: float
    x_min: float
    n_tail: int
    ks_distance: float


def ccdf(values: Any) -> tuple[np.ndarray, np.ndarray]:
    """Sorted values x and the empirical complementary CDF P(X >= x) at each, for a log-log plot."""
    x = np.sort(as_vector(values, "ccdf values"))
    if x.size == 0:
        raise ValueError("ccdf needs at least one value; got an empty array")
    return x, 1.0 - np.arange(x.size) / x.size


def top_share(scores: Any, fraction: float = 0.01) -> float:
    """Share of the total positive influence held by the top ``fraction`` of sequences (at least one sequence).

    Only positive scores count, in the total and in the top; negative scores are treated as zero.
    """
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    positive = np.clip(as_vector(scores, "top_share scores"), 0.0, None)
    total = positive.sum()
    if total <= 0.0:
        raise ValueError("top_share needs at least one positive score; all scores are zero or negative")
    k = max(1, math.ceil(fraction * positive.size - 1e-9))
    return float(np.sort(positive)[positive.size - k:].sum() / total)


def fit_power_law(
    scores: Any,
    *,
    x_min: float | None = None,
    n_bootstrap: int = 100,
    seed: int = 0,
    min_tail: int = 10,
    max_candidates: int = 200,
) -> PowerLawFit:
    """Fit a power law to the upper tail of the positive ``scores`` and test it (see the module docstring).

    Without ``x_min``, it is searched over the distinct positive scores that leave at least ``min_tail`` values in
    the tail; when there are more than ``max_candidates`` of them, an evenly spaced (by rank) subset is searched.
    A given ``x_min`` is kept fixed, in the fit and in every bootstrap refit.
    ``n_bootstrap`` synthetic data sets, drawn with ``seed``, give the goodness-of-fit p-value (0 skips it).
    """
    if min_tail < 2:
        raise ValueError(f"min_tail must be at least 2, got {min_tail}")
    if max_candidates < 1:
        raise ValueError(f"max_candidates must be at least 1, got {max_candidates}")
    if n_bootstrap < 0:
        raise ValueError(f"n_bootstrap must be >= 0, got {n_bootstrap}")
    if x_min is not None and not x_min > 0.0:
        raise ValueError(f"x_min must be positive (only positive scores enter the fit), got {x_min}")
    values = as_vector(scores, "fit_power_law scores")
    positive = np.sort(values[values > 0.0])
    if positive.size < min_tail:
        raise ValueError(
            f"a power-law tail fit needs at least {min_tail} positive scores, got {positive.size} "
            f"(of {values.size}); pass more sequences or lower min_tail"
        )

    def fit_tail(x: np.ndarray) -> _TailFit:
        if x_min is None:
            return _best_tail(x, min_tail, max_candidates)
        return _tail_at(x, x_min, min_tail)

    fit = fit_tail(positive)
    tail = positive[positive >= fit.x_min]
    rate, ratio, ratio_p = _compare_with_exponential(tail, fit.x_min, fit.alpha)
    return PowerLawFit(
        alpha=fit.alpha,
        x_min=fit.x_min,
        n_tail=fit.n_tail,
        ks_distance=fit.ks_distance,
        p_value=_bootstrap_p_value(positive, fit, fit_tail, n_bootstrap, seed),
        exponential_rate=rate,
        loglik_ratio=ratio,
        loglik_ratio_p=ratio_p,
    )


def _best_tail(x: np.ndarray, min_tail: int, max_candidates: int) -> _TailFit:
    """The maximum-likelihood fit at the x_min minimising the KS distance; ``x`` sorted ascending and positive.

    Every candidate is fitted at once: its tail's Σ log x from a suffix sum, its KS distance over a [candidates,
    values] table built a block of candidates at a time (the bootstrap refits this a hundred times per query)."""
    first_of_value = np.flatnonzero(np.r_[True, x[1:] != x[:-1]])
    starts = first_of_value[x.size - first_of_value >= min_tail]
    if starts.size > max_candidates:
        starts = starts[np.unique(np.linspace(0, starts.size - 1, max_candidates).round().astype(int))]
    log_x = np.log(x)
    suffix = np.cumsum(log_x[::-1])[::-1]  # suffix[s] = Σ_{j ≥ s} log x_j
    n_tail = x.size - starts
    log_sums = suffix[starts] - n_tail * log_x[starts]  # Σ log(x / x_min) over each tail
    starts, n_tail, log_sums = (v[log_sums > 0.0] for v in (starts, n_tail, log_sums))  # a constant tail fits none
    if not starts.size:
        raise ValueError(f"every candidate tail of {min_tail} or more positive scores is constant: no exponent fits")
    alphas = 1.0 + n_tail / log_sums
    block = max(1, _KS_TABLE // x.size)
    distances = np.concatenate([_ks_distances(log_x, starts[lo:lo + block], alphas[lo:lo + block])
                                for lo in range(0, starts.size, block)])
    best = int(np.argmin(distances))  # the first of equal distances, as a search in x_min order finds it
    return _TailFit(alpha=float(alphas[best]), x_min=float(x[starts[best]]), n_tail=int(n_tail[best]),
                    ks_distance=float(distances[best]))


def _ks_distances(log_x: np.ndarray, starts: np.ndarray, alphas: np.ndarray,
                  log_x_min: np.ndarray | None = None) -> np.ndarray:
    """Two-sided KS statistics between the tails of sorted ``log_x`` (log values) from each of ``starts`` and
    their fitted power-law CDFs, 1 − (x / x_min)^(1 − alpha), with x_min the tail's first value unless given."""
    log_x_min = log_x[starts] if log_x_min is None else log_x_min
    rank = np.arange(log_x.size)[None, :] - starts[:, None]  # position within each tail (negative: below it)
    n = (log_x.size - starts)[:, None]
    # (1 − alpha)·log(x / x_min) ≤ 0 within a tail; below it (masked out) it can overflow expm1, so it is capped at 0
    model_cdf = -np.expm1(np.minimum((1.0 - alphas[:, None]) * (log_x[None, :] - log_x_min[:, None]), 0.0))
    gap = np.maximum((rank + 1) / n - model_cdf, model_cdf - rank / n)
    return np.where(rank >= 0, gap, -np.inf).max(1)


def _tail_at(x: np.ndarray, x_min: float, min_tail: int) -> _TailFit:
    """The maximum-likelihood fit of the values of sorted ``x`` at or above a fixed ``x_min``."""
    tail = x[np.searchsorted(x, x_min):]
    fit = _maximum_likelihood(tail, x_min) if tail.size >= min_tail else None
    if fit is None:
        raise ValueError(
            f"x_min={x_min} leaves {tail.size} positive scores in the tail; need at least {min_tail}, not all "
            "equal to x_min: lower x_min"
        )
    return fit


def _maximum_likelihood(tail: np.ndarray, x_min: float) -> _TailFit | None:
    """alpha = 1 + n / sum(log(x / x_min)) and its KS distance; None when every value equals x_min."""
    log_tail = np.log(tail)
    log_sum = log_tail.sum() - tail.size * math.log(x_min)
    if log_sum <= 0.0:
        return None
    alpha = 1.0 + tail.size / log_sum
    distance = _ks_distances(log_tail, np.array([0]), np.array([alpha]), np.array([math.log(x_min)]))[0]
    return _TailFit(alpha=float(alpha), x_min=x_min, n_tail=int(tail.size), ks_distance=float(distance))


def _bootstrap_p_value(
    x: np.ndarray, fit: _TailFit, fit_tail: Callable[[np.ndarray], _TailFit], n_bootstrap: int, seed: int
) -> float:
    """Clauset et al. sec. 4.1: synthetic sets keep the body below x_min (resampled) and draw the tail from the fit,
    then go through the same fitting procedure as the data."""
    if n_bootstrap == 0:
        return math.nan
    rng = np.random.default_rng(seed)
    body = x[x < fit.x_min]
    n = x.size
    worse = 0
    for _ in range(n_bootstrap):
        n_from_tail = rng.binomial(n, fit.n_tail / n)
        from_tail = fit.x_min * (1.0 - rng.random(n_from_tail)) ** (-1.0 / (fit.alpha - 1.0))
        from_body = rng.choice(body, n - n_from_tail) if n_from_tail < n else body[:0]
        synthetic = np.sort(np.concatenate([from_tail, from_body]))
        worse += fit_tail(synthetic).ks_distance >= fit.ks_distance
    return worse / n_bootstrap


def _compare_with_exponential(tail: np.ndarray, x_min: float, alpha: float) -> tuple[float, float, float]:
    """Exponential rate on the tail, Vuong's log-likelihood ratio R (power law minus exponential) and its p-value."""
    excess = tail - x_min
    rate = 1.0 / excess.mean()
    log_power = math.log((alpha - 1.0) / x_min) - alpha * np.log(tail / x_min)
    log_exponential = math.log(rate) - rate * excess
    pointwise = log_power - log_exponential
    ratio = float(pointwise.sum())
    spread = float(pointwise.std())
    p_value = math.erfc(abs(ratio) / (spread * math.sqrt(2.0 * tail.size))) if spread > 0.0 else 1.0
    return float(rate), ratio, p_value
