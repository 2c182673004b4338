"""The linear datamodeling score (Park et al. 2023, TRAK, eq. 5): per query, the Spearman correlation over
subsets S_m between the predicted value g(S_m) = Σ_{n ∈ S_m} I(z_n, q) and the measured log p(completion | prompt)
of the model retrained on S_m; then its mean over queries with a t-based confidence interval.

Scores follow wherefrom's sign (positive: training on z raises log p(completion)), so a faithful method
correlates positively.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats


@dataclass(frozen=True)
class Estimate:
    """A mean over queries with its confidence interval, and how many queries entered it."""

    mean: float
    low: float
    high: float
    n: int


def predicted_values(scores: np.ndarray, membership: np.ndarray) -> np.ndarray:
    """g_q(S_m) = Σ_{n ∈ S_m} scores[q, n]: [Q, M] from scores [Q, N] and 0/1 membership [M, N]."""
    return np.asarray(scores, dtype=np.float64) @ np.asarray(membership, dtype=np.float64).T


def lds_per_query(predicted: np.ndarray, measured: np.ndarray) -> np.ndarray:
    """Spearman rank correlation of each row of ``predicted`` with the same row of ``measured`` [Q]; NaN for a
    query whose predicted or measured values are all equal (no ranking to compare)."""
    if predicted.shape != measured.shape:
        raise ValueError(f"predicted {predicted.shape} and measured {measured.shape} values differ in shape")
    values = np.full(predicted.shape[0], np.nan)
    for q, (p, f) in enumerate(zip(predicted, measured, strict=True)):
        if np.ptp(p) > 0 and np.ptp(f) > 0:
            values[q] = stats.spearmanr(p, f).statistic
    return values


def mean_with_interval(values: np.ndarray, confidence: float = 0.95) -> Estimate:
    """Mean of the finite values with the Student-t interval mean ± t_{(1+c)/2, n-1} · sd / √n."""
    finite = np.asarray(values, dtype=np.float64)
    finite = finite[np.isfinite(finite)]
    if finite.size == 0:
        return Estimate(float("nan"), float("nan"), float("nan"), 0)
    mean = float(finite.mean())
    if finite.size == 1:
        return Estimate(mean, float("nan"), float("nan"), 1)
    half = stats.t.ppf((1 + confidence) / 2, finite.size - 1) * finite.std(ddof=1) / np.sqrt(finite.size)
    return Estimate(mean, mean - float(half), mean + float(half), int(finite.size))


def linear_datamodeling_score(scores: np.ndarray, membership: np.ndarray, measured: np.ndarray,
                              confidence: float = 0.95) -> tuple[np.ndarray, Estimate]:
    """Per-query LDS [Q] of a score matrix [Q, N] against measured log-probabilities [Q, M], and their mean."""
    per_query = lds_per_query(predicted_values(scores, membership), measured)
    return per_query, mean_with_interval(per_query, confidence)
