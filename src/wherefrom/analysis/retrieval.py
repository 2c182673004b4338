"""Fact-tracing evaluation: does a method rank the records that should be found near the top?

A ranking lists corpus record ids per query, best first (sequences cut from the same record count once, at the
best rank). Against the records R(q) that should be found for query q:

    recall@k(q) = |top-k(q) ∩ R(q)| / min(k, |R(q)|)     (so 1.0 is reachable when |R(q)| > k)
    RR(q)       = 1 / rank of the first record of R(q)   (0 when the ranking holds none of them)

and MRR is the mean of RR over the queries. Rankings that cover only some records (BM25 candidates, a re-scored
index top) simply never rank the others.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from wherefrom.scoring.results import ScoreResult


@dataclass(frozen=True)
class Truth:
    """The records a query should find, and an optional group (e.g. the kind of query) to report it under."""

    query_id: str
    record_ids: tuple[str, ...]
    group: str | None = None


@dataclass(frozen=True)
class Ranking:
    """One method's ranking of corpus records for each query: query id → record ids, best first, each once."""

    method: str
    records: dict[str, list[str]]


@dataclass(frozen=True)
class QueryEvaluation:
    """One query under one method: the rank of each record it should find (None: not ranked), recall@k, RR."""

    query_id: str
    group: str | None
    ranks: dict[str, int | None]
    recall: dict[int, float]
    reciprocal_rank: float


@dataclass(frozen=True)
class MethodEvaluation:
    """One method over a set of queries: mean recall@k per k, MRR, and every query's evaluation."""

    method: str
    recall: dict[int, float]
    mrr: float
    queries: list[QueryEvaluation]

    def group(self, name: str | None) -> MethodEvaluation:
        """The same method over the queries of one group only."""
        return summarise(self.method, [q for q in self.queries if q.group == name], list(self.recall))


def evaluate_query(ranked: Sequence[str], truth: Truth, ks: Sequence[int]) -> QueryEvaluation:
    """Ranks of ``truth``'s records in ``ranked`` (record ids, best first), recall@k for each k, reciprocal rank."""
    position = {}
    for rank, record in enumerate(ranked, start=1):
        position.setdefault(record, rank)
    ranks = {record: position.get(record) for record in truth.record_ids}
    found = sorted(r for r in ranks.values() if r is not None)
    recall = {k: sum(r <= k for r in found) / min(k, len(ranks)) for k in ks}
    return QueryEvaluation(truth.query_id, truth.group, ranks, recall, 1 / found[0] if found else 0.0)


def evaluate(ranking: Ranking, truths: Sequence[Truth], ks: Sequence[int]) -> MethodEvaluation:
    """Every truth's query evaluated on ``ranking``; a query the ranking lacks is a ValueError."""
    missing = [t.query_id for t in truths if t.query_id not in ranking.records]
    if missing:
        raise ValueError(f"{ranking.method} ranks no query {missing[0]!r} ({len(missing)} queries of the truth "
                         "are missing); score the same queries the truth names")
    return summarise(ranking.method, [evaluate_query(ranking.records[t.query_id], t, ks) for t in truths], ks)


def summarise(method: str, queries: list[QueryEvaluation], ks: Sequence[int]) -> MethodEvaluation:
    """Means over ``queries`` (NaN for none)."""
    mean = (lambda values: float(np.mean(values))) if queries else (lambda values: float("nan"))
    return MethodEvaluation(method, {k: mean([q.recall[k] for q in queries]) for k in ks},
                            mean([q.reciprocal_rank for q in queries]), queries)


def record_order(scores: torch.Tensor, record_ids: Sequence[str]) -> list[str]:
    """Record ids by descending score (ties: lower column first), each record at its best sequence's rank."""
    order = np.lexsort((np.arange(len(record_ids)), -scores.double().numpy()))
    return list(dict.fromkeys(record_ids[i] for i in order))


def score_rankings(result: ScoreResult, name: str) -> list[Ranking]:
    """The rankings a score folder holds: by influence (named ``name``) and, when normalised, by cosine."""
    record_ids = [s.record_id for s in result.sequences]
    matrices = [(name, result.scores)] + ([] if result.cosine is None else [(f"{name} cosine", result.cosine)])
    return [Ranking(method, {q.query_id: record_order(matrix[q.index], record_ids) for q in result.queries})
            for method, matrix in matrices]
