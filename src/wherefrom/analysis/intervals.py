"""Intervals over queries: the mean of a per-query measure with its two-sided Student t-interval.

    mean ± t_{(1 + level) / 2, n - 1} · s / √n,   s the sample standard deviation (ddof 1) of the n values.

Queries whose measure is undefined (NaN) are left out; with one value the interval is undefined (NaN bounds).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
from scipy import stats

LEVEL = 0.95


@dataclass(frozen=True)
class Interval:
    """The mean of ``n`` per-query values and the bounds of its t-interval (NaN where undefined)."""

    mean: float
    low: float
    high: float
    n: int

    def as_dict(self) -> dict[str, float | int | None]:
        """JSON-ready (NaN as None)."""
        return {name: None if isinstance(v, float) and math.isnan(v) else v
                for name, v in (("mean", self.mean), ("low", self.low), ("high", self.high), ("n", self.n))}


def t_interval(values: Iterable[float], level: float = LEVEL) -> Interval:
    """Mean and t-interval at ``level`` of the finite ``values``."""
    x = np.asarray([v for v in values if v is not None and math.isfinite(v)], dtype=np.float64)
    if x.size == 0:
        return Interval(math.nan, math.nan, math.nan, 0)
    mean = float(x.mean())
    if x.size == 1:
        return Interval(mean, math.nan, math.nan, 1)
    half = float(stats.t.ppf((1.0 + level) / 2.0, x.size - 1) * x.std(ddof=1) / math.sqrt(x.size))
    return Interval(mean, mean - half, mean + half, int(x.size))
