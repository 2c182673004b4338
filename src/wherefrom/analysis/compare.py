"""Comparing the influence of the same sequences on two queries (or under two scoring set-ups)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from wherefrom.analysis._arrays import as_vector


@dataclass(frozen=True)
class ScoreCorrelation:
    """Pearson and Spearman (rank, ties averaged) correlation of two score vectors; NaN if one is constant."""

    pearson: float
    spearman: float


@dataclass(frozen=True)
class CrossRanks:
    """The top-k sequences of one query and where they rank under another (rank 1 = most positive)."""

    rows: np.ndarray  # [k] rows of the source query's top-k, best first
    source_ranks: np.ndarray  # [k] their ranks under the source query
    target_ranks: np.ndarray  # [k] their ranks under the target query


def score_correlation(a: Any, b: Any) -> ScoreCorrelation:
    """Correlation of two queries' scores over the same sequences."""
    x, y = _paired(a, b)
    return ScoreCorrelation(pearson=_pearson(x, y), spearman=_pearson(_average_ranks(x), _average_ranks(y)))


def cross_ranks(source: Any, target: Any, k: int) -> CrossRanks:
    """Ranks under ``target`` of the ``k`` highest-scoring sequences under ``source`` (ties: earlier row first).

    A sequence's rank is 1 + the number of sequences scoring strictly higher, so tied scores share a rank.
    """
    x, y = _paired(source, target)
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    rows = np.argsort(-x, kind="stable")[: min(k, x.size)]
    return CrossRanks(rows=rows, source_ranks=_competition_ranks(x, rows), target_ranks=_competition_ranks(y, rows))


def _average_ranks(values: np.ndarray) -> np.ndarray:
    """Ranks 1..n in ascending order of ``values``, tied values sharing the mean of their ranks."""
    _, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
    last = np.cumsum(counts)  # 1-based rank of the last copy of each distinct value
    return ((last - counts + 1 + last) / 2.0)[inverse]


def _competition_ranks(values: np.ndarray, rows: np.ndarray) -> np.ndarray:
    ascending = np.sort(values)
    return 1 + values.size - np.searchsorted(ascending, values[rows], side="right")


def _pearson(x: np.ndarray, y: np.ndarray) -> float:
    dx, dy = x - x.mean(), y - y.mean()
    denominator = np.sqrt((dx @ dx) * (dy @ dy))
    return float(dx @ dy / denominator) if denominator > 0.0 else float("nan")


def _paired(a: Any, b: Any) -> tuple[np.ndarray, np.ndarray]:
    x, y = as_vector(a, "the first scores"), as_vector(b, "the second scores")
    if x.size != y.size:
        raise ValueError(
            f"score vectors differ in length ({x.size} vs {y.size}); compare scores over the same sequences"
        )
    if x.size < 2:
        raise ValueError(f"need at least 2 sequences to compare scores, got {x.size}")
    return x, y
