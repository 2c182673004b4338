"""What `wherefrom demo --moe` measures about experts: does a planted fact's influence sit in a few experts, and do
the English and the French question of a fact go through the same experts?

From the per-layer EK-FAC scores: each query's influence through each expert (`analysis/experts.py`). Reported as
measured, whatever it shows. Concentration: how many of the model's experts carry half of the query's positive
influence through experts, against the count if every expert carried the same. Languages: the cosine between the
English and the French query's vectors of expert influence for the same fact, against the same cosine between
English queries of different facts (the experts every query uses), so busy experts are not mistaken for a shared
fact.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from itertools import combinations

import torch

from wherefrom.analysis.experts import expert_shares
from wherefrom.scoring.results import ScoreResult


@dataclass(frozen=True)
class ExpertFindings:
    """Concentration of the planted facts' influence in experts and its overlap across languages."""

    n_experts: int
    concentration: dict[str, float]  # per query kind: median number of experts carrying half of it
    uniform: float  # the same count if every expert carried an equal share
    same_fact_cosine: float | None  # mean cosine of expert influence, English vs French query of one fact
    other_fact_cosine: float | None  # the same between English queries of different facts (the baseline)
    pairs: int

    def statement(self) -> str:
        """The finding in words."""
        counts = ", ".join(f"{kind} {count:g}" for kind, count in self.concentration.items())
        text = (f"Experts carrying half of a query's influence through experts (median, of {self.n_experts}; "
                f"{self.uniform:g} if spread evenly): {counts}. ")
        if self.same_fact_cosine is None or self.other_fact_cosine is None:
            return text + "No fact was asked in both English and French with a baseline pair."
        verdict = ("the English and French questions of a fact go through the same experts more than two different "
                   "facts do" if self.same_fact_cosine > self.other_fact_cosine else
                   "the French question does not share the English one's experts more than unrelated facts do")
        return text + (f"Cosine of expert influence between the English and French query of a fact: "
                       f"{self.same_fact_cosine:.2f} over {self.pairs} facts, against {self.other_fact_cosine:.2f} "
                       f"between English queries of different facts: {verdict}.")


def expert_findings(result: ScoreResult, kinds: dict[str, str], facts: dict[str, str]) -> ExpertFindings | None:
    """The findings for a result scored with ``--per-layer`` on a model with tracked experts (None otherwise)."""
    if result.per_layer is None:
        return None
    vectors: dict[str, dict[str, float]] = {}
    for q in result.queries:
        shares = expert_shares(result.layer_names, result.per_layer, result.scores, q.index)
        if shares:
            vectors[q.query_id] = dict(shares)
    if not vectors:
        return None
    experts = sorted({name for shares in vectors.values() for name in shares})
    by_kind: dict[str, list[int]] = {}
    for query_id, shares in vectors.items():
        count = _carrying_half(list(shares.values()))
        if count:
            by_kind.setdefault(kinds[query_id], []).append(count)
    dense = {q: torch.tensor([shares.get(e, 0.0) for e in experts], dtype=torch.float64) for q, shares in vectors.items()}
    english = {facts[q]: q for q in dense if kinds[q] == "training_wording"}
    french = {facts[q]: q for q in dense if kinds[q] == "french"}
    shared = [fact for fact in english if fact in french]
    same = [_cosine(dense[english[f]], dense[french[f]]) for f in shared]
    other = [_cosine(dense[a], dense[b]) for a, b in combinations(english.values(), 2)]
    return ExpertFindings(len(experts), {kind: statistics.median(c) for kind, c in by_kind.items()},
                          math.ceil(len(experts) / 2), statistics.mean(same) if same else None,
                          statistics.mean(other) if other else None, len(same))


def _carrying_half(shares: list[float]) -> int:
    """The fewest experts whose positive shares reach half of all experts' positive shares (0: none positive)."""
    positive = sorted((s for s in shares if s > 0), reverse=True)
    total, running = sum(positive), 0.0
    for count, share in enumerate(positive, start=1):
        running += share
        if running >= total / 2:
            return count
    return 0


def _cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    norm = float(a.norm() * b.norm())
    return float(a @ b) / norm if norm else 0.0
