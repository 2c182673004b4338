"""Random training subsets for the linear datamodeling score: each a fixed fraction of the corpus, drawn from
its own seed so that asking for more subsets keeps the earlier ones."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from wherefrom.errors import WherefromError


@dataclass(frozen=True)
class Subset:
    """Subset number ``index`` of the corpus: the sorted rows it keeps, drawn from ``seed``."""

    index: int
    seed: int
    rows: tuple[int, ...]


def subset_size(n_sequences: int, fraction: float) -> int:
    """round(fraction × N) sequences, at least one and at most N - 1 (a subset must leave something out)."""
    if not 0 < fraction < 1:
        raise WherefromError(f"--fraction must be strictly between 0 and 1; got {fraction}.")
    if n_sequences < 2:
        raise WherefromError(f"subsets need a corpus of at least 2 sequences; got {n_sequences}.")
    return min(n_sequences - 1, max(1, round(fraction * n_sequences)))


def sample_subsets(n_sequences: int, count: int, fraction: float, base_seed: int = 0) -> list[Subset]:
    """``count`` subsets of ``subset_size(n_sequences, fraction)`` distinct rows, drawn uniformly without
    replacement; subset k depends only on (N, fraction, base_seed, k)."""
    if count < 1:
        raise WherefromError(f"--models must be at least 1; got {count}.")
    size = subset_size(n_sequences, fraction)
    subsets = []
    for index in range(count):
        seed = base_seed * 1_000_003 + index
        rows = np.random.default_rng(seed).choice(n_sequences, size=size, replace=False)
        subsets.append(Subset(index, seed, tuple(sorted(int(r) for r in rows))))
    return subsets


def membership(subsets: list[Subset], n_sequences: int) -> np.ndarray:
    """The 0/1 matrix [M, N]: entry (m, n) is 1 when subset m keeps sequence n."""
    matrix = np.zeros((len(subsets), n_sequences), dtype=np.float64)
    for m, subset in enumerate(subsets):
        matrix[m, list(subset.rows)] = 1.0
    return matrix
