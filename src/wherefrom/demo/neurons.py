"""What the demo measures about units: does a planted fact's influence sit in a few MLP neurons, and do the same
neurons carry the fact asked in English and in French?

Reported as measured, whatever it shows: the overlap of the English and the French query's top units for the
same fact is set against the overlap between English queries about different facts (the neurons every query
uses), so a shared set of busy neurons is not mistaken for a shared fact.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from itertools import combinations

from wherefrom.scoring.results import ScoreResult

TOP_UNITS = 20  # units per query compared across queries


@dataclass(frozen=True)
class NeuronFindings:
    """Concentration and cross-language overlap of the units that carry the demo's planted facts."""

    n_units: int
    top_units: int
    concentration: dict[str, float]  # per query kind: median number of units carrying half of the influence
    same_fact_overlap: float | None  # mean Jaccard overlap of top units, English vs French query of one fact
    other_fact_overlap: float | None  # the same between English queries of different facts (the baseline)
    pairs: int  # English/French pairs compared

    def statement(self) -> str:
        """The finding in words."""
        concentration = ", ".join(f"{kind} {count:g}" for kind, count in self.concentration.items())
        text = (f"Units carrying half of a query's influence (median of {self.n_units} MLP neurons): {concentration}. ")
        if self.same_fact_overlap is None:
            return text + "No fact was asked in both English and French."
        if self.other_fact_overlap is None:
            return text + (f"Top-{self.top_units} units shared by the English and French query of a fact: Jaccard "
                           f"{self.same_fact_overlap:.2f} over {self.pairs} facts (one fact only: no baseline).")
        verdict = ("the same neurons carry a fact in both languages more than they carry two different facts"
                   if self.same_fact_overlap > self.other_fact_overlap else
                   "the French query does not share the English query's neurons more than unrelated facts do")
        return text + (f"Top-{self.top_units} units shared by the English and French query of a fact: Jaccard "
                       f"{self.same_fact_overlap:.2f} over {self.pairs} facts, against {self.other_fact_overlap:.2f} "
                       f"between English queries of different facts: {verdict}.")


def neuron_findings(result: ScoreResult, kinds: dict[str, str], facts: dict[str, str]) -> NeuronFindings | None:
    """The findings for a result scored with ``--per-unit`` (None without it); ``kinds`` and ``facts`` map query
    ids to their kind and fact."""
    units = result.units
    if units is None:
        return None
    top = {q.query_id: set(units.ids[q.index, :TOP_UNITS].tolist()) for q in result.queries}
    by_kind: dict[str, list[int]] = {}
    for q in result.queries:
        count = int(units.concentration[q.index])
        if count > 0:
            by_kind.setdefault(kinds[q.query_id], []).append(count)
    english = {facts[q]: q for q in top if kinds[q] == "training_wording"}
    french = {facts[q]: q for q in top if kinds[q] == "french"}
    shared = [fact for fact in english if fact in french]
    same = [_jaccard(top[english[f]], top[french[f]]) for f in shared]
    other = [_jaccard(top[a], top[b]) for a, b in combinations(english.values(), 2)]
    return NeuronFindings(
        n_units=units.n_units, top_units=min(TOP_UNITS, units.ids.shape[1]),
        concentration={kind: statistics.median(counts) for kind, counts in by_kind.items()},
        same_fact_overlap=statistics.mean(same) if same else None,
        other_fact_overlap=statistics.mean(other) if other else None, pairs=len(same),
    )


def _jaccard(a: set[int], b: set[int]) -> float:
    return len(a & b) / len(a | b) if a | b else 0.0
