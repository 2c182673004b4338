"""Answer one question: write the completion (streamed), rank every sequence, re-score the best ones exactly
per token and per layer, and turn the result into what the page shows."""

from __future__ import annotations

import time
from dataclasses import dataclass, replace

import torch

from wherefrom.analysis import restricted_scores
from wherefrom.data.queries import Query
from wherefrom.explorer.generate import CompletionStreamer
from wherefrom.explorer.jobs import Job
from wherefrom.explorer.ranking import rank_all, rescore
from wherefrom.explorer.schemas import (
    AnswerView,
    AskRequest,
    HeatmapView,
    NeuronsView,
    SequenceView,
    TailView,
    TokenView,
    UnitSequenceView,
    UnitView,
)
from wherefrom.explorer.session import ExplorerSession
from wherefrom.options import DEFAULT_RESCORE
from wherefrom.outputs.figures import DIVERGING_RGB, Layers, Tail
from wherefrom.outputs.sections import query_sections
from wherefrom.outputs.unit_panel import UnitPanel
from wherefrom.scoring.generation import generate_completion
from wherefrom.scoring.results import SIGN_AND_UNITS, ScoreResult, SequenceInfo


@dataclass
class Answer:
    """What the page shows, and the result behind it (for the HTML report)."""

    view: AnswerView
    result: ScoreResult


def answer(session: ExplorerSession, query: Query, request: AskRequest, job: Job) -> Answer:
    """Run every step for ``query``, reporting progress on ``job`` (which may be cancelled between steps)."""
    seconds: dict[str, float] = {}
    clock = time.perf_counter()
    generated = query.needs_completion
    if generated:
        job.emit("stage", stage="completion", message="the model is writing its answer", done=0, total=1)
        query = _write(session, query, request.max_new_tokens, request.stop, job)
        seconds["completion"], clock = time.perf_counter() - clock, time.perf_counter()
    job.emit("stage", stage="ranking", message=f"ranking {len(session.sequences)} training sequences "
             f"({'gradient index' if session.index is not None else 'exact EK-FAC scan'})", done=0, total=1)
    layers = session.block_layers(request.layers)
    ranking = rank_all(session, query, lambda done, total: job.emit(
        "stage", stage="ranking", message="ranking training sequences", done=done, total=total), request.normalize,
        layers)
    seconds["ranking"], clock = time.perf_counter() - clock, time.perf_counter()
    basis = ranking.scores if ranking.cosine is None else ranking.cosine
    if request.layers != "all":
        basis = ranking.restricted
    n_candidates = request.top_k if ranking.exact else max(request.top_k, DEFAULT_RESCORE)  # as `score --index`
    candidates = torch.topk(basis, min(n_candidates, basis.numel())).indices.tolist()
    job.emit("stage", stage="rescoring", message=f"scoring the best {len(candidates)} sequences per token and "
             "per layer", done=0, total=1)
    exact = rescore(session, query, candidates, layers, request.normalize)
    seconds["rescoring"], clock = time.perf_counter() - clock, time.perf_counter()
    job.emit("stage", stage="figures", message="preparing the figures", done=0, total=1)
    influence = ranking.scores if request.layers == "all" else basis
    result = _whole_corpus_result(session, exact, candidates, influence, ranking.cosine)
    view = _view(session, request, result, candidates, ranking.exact, generated)
    seconds["figures"] = time.perf_counter() - clock
    view.seconds = seconds
    return Answer(view, result)


def _write(session: ExplorerSession, query: Query, max_new_tokens: int, stop: str, job: Job) -> Query:
    """``query`` with the model's greedy completion, streamed to the job's events as it is written (the last event
    is the completion as kept: a token written to see that a sentence ended is dropped)."""
    tokenizer = session.loaded.tokenizer
    shown: list[str] = []
    streamer = CompletionStreamer(tokenizer, lambda text: (shown.append(text), job.emit("completion", text=text)))
    options = replace(session.options, max_new_tokens=max_new_tokens, stop=stop)
    written = generate_completion(session.loaded.model, tokenizer, query, options, streamer)
    if not shown or shown[-1] != written.completion:
        job.emit("completion", text=written.completion)
    return written


def _view(session: ExplorerSession, request: AskRequest, result: ScoreResult, candidates: list[int],
          exact_ranking: bool, generated: bool) -> AnswerView:
    section = query_sections(result, request.top_k, n_bootstrap=0)[0]
    blocks = session.blocks if request.layers == "all" else {}
    exact = set(candidates)
    def block_split(row: int) -> dict[str, float]:
        return {name: float(restricted_scores(result.per_layer[:, 0, row], block)) for name, block in blocks.items()}

    top = [SequenceView(
        rank=t.rank, row=t.row, record_id=t.record_id, score=t.score, exact=t.row in exact, text=t.text,
        cosine=None if result.cosine is None else float(result.cosine[0, t.row]),
        tokens=[TokenView(text=s.text, value=s.value, style=s.style) for s in t.tokens or []] if t.row in exact else [],
        spurious=t.spurious,
        blocks=block_split(t.row) if t.row in exact else {},
    ) for t in section.top]
    query = result.queries[0]
    return AnswerView(
        prompt=query.prompt, completion=query.completion, generated=generated,
        completion_logprob=query.completion_logprob, layers=request.layers,
        layer_range=_layer_range(session, request.layers, len(result.layer_names)),
        ranking="exact" if exact_ranking else "index", ranked_by=result.ranked_by, n_sequences=len(session.sequences),
        n_candidates=len(candidates), top=top, token_scale=section.token_scale or 0.0,
        layer_heatmap=_heatmap(section.layers), layer_message=section.layers.message,
        tail=_tail(section.tail, "exact EK-FAC scores of every sequence" if exact_ranking else
                   f"exact for the best {len(candidates)}, the gradient index's approximation for the others"),
        units=SIGN_AND_UNITS, seconds={}, neurons=_neurons(section.units),
    )


def _tail(tail: Tail, source: str) -> TailView:
    """The tail's statistics and the points of its plot, as the page's JSON."""
    return TailView(n_scores=tail.n_scores, n_positive=tail.n_positive, alpha=tail.fit.alpha if tail.fit else None,
                    x_min=tail.fit.x_min if tail.fit else None, top_share=tail.top_share, message=tail.message,
                    source=source, x=[] if tail.x is None else tail.x.tolist(),
                    survival=[] if tail.survival is None else tail.survival.tolist(),
                    fit_line=None if tail.fit_line is None else list(tail.fit_line))


def _heatmap(layers: Layers) -> HeatmapView | None:
    """The layer heatmap's matrix, labels and colour scale, as the page's JSON (None without one)."""
    if layers.heatmap is None:
        return None
    return HeatmapView(matrix=layers.heatmap.matrix.tolist(), block_labels=layers.block_labels, labels=layers.labels,
                       rows=layers.heatmap.rows.tolist(), limit=layers.limit, colours=list(DIVERGING_RGB))


def _neurons(panel: UnitPanel) -> NeuronsView:
    """The "which neurons carry it" panel as the page's JSON."""
    return NeuronsView(
        units=[UnitView(name=b.name, influence=b.influence, share=b.share, sequences=[
            UnitSequenceView(row=s.row, record_id=s.record_id, value=s.value, score=s.score, text=s.text,
                             tokens=[TokenView(text=t.text, value=t.value, style=t.style) for t in s.tokens or []])
            for s in b.sequences]) for b in panel.bars],
        concentration=panel.concentration, n_units=panel.n_units, message=panel.message,
    )


def _layer_range(session: ExplorerSession, block: str, n_scored: int) -> str:
    if block == "all":
        return f"all {n_scored} tracked layers"
    first, last = session.blocks[block].first_layer, session.blocks[block].last_layer
    return f"transformer layer {first}" if first == last else f"transformer layers {first}-{last}"


def _whole_corpus_result(session: ExplorerSession, exact: ScoreResult, candidates: list[int],
                         influence: torch.Tensor, cosine: torch.Tensor | None) -> ScoreResult:
    """The answer as a result over the whole corpus (what the page and the HTML report show): the ranking's
    scores (and cosines), with the candidates' exact values and per-layer and per-token splits in their columns
    (the other columns carry no split; ``token_rows`` says so, which keeps their zeros out of the spurious test)."""
    n = len(session.sequences)
    columns = torch.tensor(candidates)
    scores = influence.clone().float().unsqueeze(0)
    scores[0, columns] = exact.scores[0].float()
    if cosine is not None:
        cosine = cosine.clone().float().unsqueeze(0)
        cosine[0, columns] = exact.cosine[0].float()
    per_layer = torch.zeros(len(exact.layer_names), 1, n)
    per_layer[:, 0, columns] = exact.per_layer[:, 0].float()
    lengths = torch.tensor([len(s.input_ids) for s in session.sequences])
    offsets = torch.cat([torch.zeros(1, dtype=torch.long), lengths.cumsum(0)])
    per_token = torch.zeros(1, int(offsets[-1]))
    sequences = [SequenceInfo(s.row, s.record_id, s.start, s.end, text, pieces)
                 for s, text, pieces in zip(session.sequences, session.texts, session.pieces)]
    for position, row in enumerate(candidates):
        per_token[0, offsets[row]:offsets[row + 1]] = exact.token_scores(0, position).float()
    metadata = {**(session.sources or {}), "n_training_sequences_fitted": session.curvature.n_sequences}
    units = exact.units
    if units is not None:  # its rows are positions among the candidates: make them corpus rows
        units = replace(units, rows=torch.where(units.rows >= 0, columns[units.rows.clamp(min=0)], -1))
    return ScoreResult(scores, sequences, exact.queries, exact.layer_names, per_layer, per_token, offsets,
                       token_rows=columns.unsqueeze(0), cosine=cosine, units=units, metadata=metadata)
