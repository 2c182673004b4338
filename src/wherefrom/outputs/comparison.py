"""Cross-query comparison for the report: how alike two queries' scores over the same sequences are."""

from __future__ import annotations

import math
from dataclasses import dataclass

from wherefrom.analysis import score_correlation
from wherefrom.outputs.tokens import influence_style
from wherefrom.scoring.results import ScoreResult


@dataclass(frozen=True)
class Cell:
    """One entry of a correlation matrix and the inline CSS that colours it (orange positive, blue negative)."""

    value: float
    style: str


@dataclass(frozen=True)
class Comparison:
    """Pearson and Spearman correlation matrices of the queries' score vectors (rows and columns: queries)."""

    query_ids: list[str]
    pearson: list[list[Cell]]
    spearman: list[list[Cell]]


def compare_queries(result: ScoreResult) -> Comparison | None:
    """Correlation of every pair of queries' scores; None with fewer than 2 queries or 2 sequences."""
    n_queries, n_sequences = result.scores.shape
    if n_queries < 2 or n_sequences < 2:
        return None
    scores = result.scores.double()
    pairs = [[score_correlation(scores[i], scores[j]) for j in range(n_queries)] for i in range(n_queries)]
    return Comparison(
        query_ids=[q.query_id for q in result.queries],
        pearson=[[_cell(c.pearson) for c in row] for row in pairs],
        spearman=[[_cell(c.spearman) for c in row] for row in pairs],
    )


def _cell(value: float) -> Cell:
    return Cell(value=value, style="" if math.isnan(value) else influence_style(value, 1.0))
