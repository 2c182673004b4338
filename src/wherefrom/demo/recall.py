"""Ground truth for the demo: do a query's top-ranked sequences include the documents that state its fact?"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

from wherefrom.scoring.results import ScoreResult


@dataclass(frozen=True)
class KindRecall:
    """Mean recall@k over the queries of one kind, for one strategy."""

    kind: str
    queries: int
    recall: float


def recall_at_k(result: ScoreResult, carriers: dict[str, tuple[str, ...]], query_facts: dict[str, str],
                k: int = 10) -> dict[str, float]:
    """Per query id: |top-k ∩ carriers| / min(k, |carriers|), for queries whose fact has carrier documents.

    Dividing by min(k, |carriers|) makes 1.0 reachable when a fact has more than k carriers.
    """
    recalls = {}
    for query in result.queries:
        relevant = set(carriers.get(query_facts.get(query.query_id, ""), ()))
        if not relevant:
            continue
        top = {result.sequences[row].record_id for row in result.top(query.index, k)}
        recalls[query.query_id] = len(top & relevant) / min(k, len(relevant))
    return recalls


def recall_by_kind(recalls: dict[str, float], query_kinds: dict[str, str]) -> list[KindRecall]:
    """Mean recall per query kind, in first-seen order."""
    groups: dict[str, list[float]] = defaultdict(list)
    for query_id, value in recalls.items():
        groups[query_kinds[query_id]].append(value)
    return [KindRecall(kind, len(values), sum(values) / len(values)) for kind, values in groups.items()]
