"""Ground truth for the demo: each query should find the documents that state its planted fact (its carriers).

The demo writes it as the truth file of `wherefrom evaluate` and reads its recall table from the evaluation.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from wherefrom.analysis.retrieval import MethodEvaluation, Truth


@dataclass(frozen=True)
class KindRecall:
    """Mean recall@k over the queries of one kind, for one method."""

    kind: str
    queries: int
    recall: float


def demo_truth(query_rows: list[dict[str, Any]], carriers: dict[str, tuple[str, ...]]) -> list[Truth]:
    """Per query whose fact has carrier documents: those documents, grouped by the query's kind."""
    return [Truth(row["id"], carriers[row["fact"]], row["kind"]) for row in query_rows if carriers.get(row["fact"])]


def recall_by_kind(evaluation: MethodEvaluation, k: int) -> list[KindRecall]:
    """Mean recall@k per query kind, in first-seen order."""
    kinds = list(dict.fromkeys(q.group for q in evaluation.queries))
    return [KindRecall(kind, len(part.queries), part.recall[k])
            for kind, part in ((kind, evaluation.group(kind)) for kind in kinds)]
