"""What `demo --sizes` found, in sentences: each measure from the smallest to the largest size, seeds as error bars.

A direction is stated only when both seeds of the largest size lie on the same side of both seeds of the smallest
(each seed's value: its mean over queries); otherwise the sentence says the seeds do not agree on one.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from wherefrom.scaling.compare import ScaleComparison
from wherefrom.scaling.measures import MEASURES

HEADLINE = ("bm25_top_k", "disjoint_share", "recall_at_k", "other_language_share", "pair_spearman", "layers_lower",
            "layers_upper", "top_share")


def findings(comparison: ScaleComparison, sizes: Sequence[str]) -> list[str]:
    """One sentence per headline measure, then how far two seeds of one size agree."""
    order = list(dict.fromkeys(sizes))
    sentences = []
    for name in HEADLINE:
        if name not in comparison.folders[0].values:
            continue
        by_size = {s: [f.intervals[name].mean for f, fs in zip(comparison.folders, sizes, strict=True) if fs == s]
                   for s in order}
        label = MEASURES[name][0].replace("top-k", f"top-{comparison.k}").replace("@k", f"@{comparison.k}")
        values = "; ".join(f"{s} {', '.join(_number(v) for v in by_size[s])}" for s in order)
        direction = _direction(by_size[order[0]], by_size[order[-1]], order[-1])
        sentences.append(f"{label} (per seed, mean over queries): {values}: {direction}.")
    agreement = []
    for a in comparison.agreements:
        first, second = (sizes[[f.label for f in comparison.folders].index(x)] for x in (a.first, a.second))
        if first == second:
            agreement.append(f"{first} {_number(a.intervals['spearman'].mean)}")
    if agreement:
        sentences.append(f"Spearman ρ between the two seeds of one size: {'; '.join(agreement)}.")
    return sentences


def _direction(smallest: list[float], largest: list[float], name: str) -> str:
    if any(math.isnan(v) for v in smallest + largest) or not smallest or not largest:
        return "undefined for some seed"
    if max(largest) < min(smallest):
        return f"lower for {name} at every seed"
    if min(largest) > max(smallest):
        return f"higher for {name} at every seed"
    return "the seeds do not agree on a direction"


def _number(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:.3g}"
