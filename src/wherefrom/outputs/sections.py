"""What the report shows for each query, computed from a ScoreResult with the analysis library.

Every part degrades to a message saying why it is missing (no per-layer or per-token scores, too few positive
scores for a tail fit, ...) instead of failing the whole report. Memorisation is searched in the sequence texts,
so its spans and lengths are in characters.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from wherefrom.analysis import (
    SPURIOUS_LEVEL,
    SPURIOUS_THRESHOLD,
    CorpusIndex,
    SharedSpan,
    concentration_p_values,
    token_norm_ratios,
)
from wherefrom.errors import WherefromError
from wherefrom.outputs._text import shorten
from wherefrom.outputs.figures import Layers, Tail, layers, tail
from wherefrom.outputs.tokens import TokenSpan, token_spans
from wherefrom.outputs.unit_panel import UnitPanel, unit_panel
from wherefrom.scoring.results import QueryInfo, ScoreResult

NOTABLE_SHARED_CHARS = 3  # shorter spans shared with the completion (a space, a letter) are not worth showing


@dataclass(frozen=True)
class TopSequence:
    """One of a query's most positively influential training sequences."""

    rank: int
    row: int
    record_id: str
    score: float
    text: str
    tokens: list[TokenSpan] | None  # None without per-token scores
    norm_ratio: float | None  # ||a||_2 / ||a||_1 of its per-token influence (None without per-token scores)
    concentration_p: float | None  # share of same-length corpus token draws as concentrated (analysis.spurious)
    spurious: bool  # ratio above 2/3 and concentration_p at most 1%
    shared: SharedSpan | None  # longest span of the completion it contains (None when not searched)
    self_influence: float | None
    cosine: float | None = None  # with --normalize: the cosine that ranks it


@dataclass(frozen=True)
class MemorisationCheck:
    """Where the completion occurs in the scored corpus (in characters of the sequence texts)."""

    completion_length: int
    verbatim_records: list[str]  # distinct record ids holding the whole completion, in corpus order
    verbatim_ranks: list[int]  # ranks of the top sequences holding it
    longest_length: int  # longest part of the completion found anywhere
    longest_span: str
    longest_records: list[str]


@dataclass(frozen=True)
class QuerySection:
    """Everything the report shows for one query."""

    anchor: str
    query: QueryInfo
    top: list[TopSequence]
    token_scale: float | None  # |influence| drawn at full colour in the token heatmaps (None: no per-token)
    spurious_count: int | None  # spurious sequences among the top ones (None without per-token scores)
    tail: Tail
    layers: Layers
    memorisation: MemorisationCheck | None  # None for an empty completion
    units: UnitPanel | None = None  # which neurons and heads carry it (a message when --per-unit was not used)


def query_sections(result: ScoreResult, top_k: int, n_bootstrap: int) -> list[QuerySection]:
    """One section per query of ``result``, with its ``top_k`` sequences."""
    if top_k < 1:
        raise WherefromError(f"top_k must be at least 1, got {top_k} (--top-k).")
    if n_bootstrap < 0:
        raise WherefromError(f"n_bootstrap must be >= 0 (0 skips the goodness-of-fit test), got {n_bootstrap} "
                             "(--bootstraps).")
    ratios = shares = None
    if result.per_token is not None and result.token_offsets is not None:
        ratios = token_norm_ratios(result.per_token, result.token_offsets)
        shares = concentration_p_values(result.per_token, result.token_offsets,
                                        [result.top(query.index, top_k) for query in result.queries],
                                        pooled=result.token_rows)
    index = CorpusIndex([s.text for s in result.sequences])
    sections = []
    for query in result.queries:
        rows = result.top(query.index, top_k)
        scale = _token_scale(result, query.index, rows)
        spans = index.shared_spans(query.completion) if query.completion else None
        top = _top_sequences(result, query.index, rows, ratios, shares, spans, scale)
        labels = {t.row: f"#{t.rank} {shorten(t.record_id, 18)}" for t in top}
        sections.append(QuerySection(
            anchor=f"query-{query.index}",
            query=query,
            top=top,
            token_scale=scale,
            spurious_count=None if ratios is None else sum(t.spurious for t in top),
            tail=tail(result.scores[query.index].double().numpy(), n_bootstrap),
            layers=layers(result, query.index, rows, labels),
            memorisation=_memorisation(result, index, query.completion, top) if query.completion else None,
            units=unit_panel(result, query.index, f"query-{query.index}"),
        ))
    return sections


def _top_sequences(result: ScoreResult, query: int, rows: list[int], ratios: np.ndarray | None,
                   shares: np.ndarray | None, spans: list[SharedSpan] | None, scale: float | None
                   ) -> list[TopSequence]:
    top = []
    for rank, row in enumerate(rows, start=1):
        sequence = result.sequences[row]
        ratio = math.nan if ratios is None else float(ratios[query, row])
        share = math.nan if shares is None else float(shares[query, row])
        top.append(TopSequence(
            rank=rank,
            row=row,
            record_id=sequence.record_id,
            score=float(result.scores[query, row]),
            text=sequence.text,
            tokens=None if scale is None or not result.has_token_scores(query, row) else token_spans(
                sequence.tokens, result.token_scores(query, row).tolist(), scale),
            norm_ratio=None if math.isnan(ratio) else ratio,
            concentration_p=None if math.isnan(share) else share,
            spurious=ratio > SPURIOUS_THRESHOLD and share <= SPURIOUS_LEVEL,
            shared=None if spans is None else spans[row],
            self_influence=None if result.self_influence is None else float(result.self_influence[row]),
            cosine=None if result.cosine is None else float(result.cosine[query, row]),
        ))
    return top


def _token_scale(result: ScoreResult, query: int, rows: list[int]) -> float | None:
    if result.per_token is None or result.token_offsets is None:
        return None
    rows = [row for row in rows if result.has_token_scores(query, row)]
    values = torch.cat([result.token_scores(query, row) for row in rows]) if rows else torch.zeros(0)
    return float(values.abs().max()) if values.numel() else 0.0


def _memorisation(result: ScoreResult, index: CorpusIndex, completion: str,
                  top: list[TopSequence]) -> MemorisationCheck:
    found = index.search(completion)

    def records(rows: list[int]) -> list[str]:
        return list(dict.fromkeys(result.sequences[row].record_id for row in sorted(rows)))

    return MemorisationCheck(
        completion_length=found.completion_length,
        verbatim_records=records([row for row, _ in found.verbatim]),
        verbatim_ranks=[t.rank for t in top if t.shared is not None and t.shared.length == found.completion_length],
        longest_length=found.longest_length,
        longest_span=str(found.longest[0].span) if found.longest else "",
        longest_records=records([span.row for span in found.longest]),
    )

