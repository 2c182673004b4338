"""Score training sequences against queries: query gradients → (G + λI)⁻¹ → one streamed pass over the corpus."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict

import torch
from torch import nn

from wherefrom.curvature.fitting import FittedCurvature
from wherefrom.data.corpus import TrainingSequence
from wherefrom.data.queries import Query
from wherefrom.engine.execution import Execution
from wherefrom.engine.passes import Checkpoints, PassPlan, run_pass
from wherefrom.engine.stream import Labels
from wherefrom.models.selection import TrackedLayer
from wherefrom.models.units import find_unit, unit_map
from wherefrom.options import ScoreOptions
from wherefrom.scoring.contract import ScoreAccumulator
from wherefrom.scoring.cosine import cosine, query_self_influence
from wherefrom.scoring.lowrank import LowRankQueries, low_rank
from wherefrom.scoring.query_gradients import QueryGradients, query_gradients
from wherefrom.scoring.results import QueryInfo, ScoreResult, SequenceInfo
from wherefrom.scoring.top_tokens import top_token_scores
from wherefrom.scoring.unit_pass import unit_summary, unit_token_maps
from wherefrom.scoring.unit_scan import UnitScanAccumulator, restrict_queries

Precondition = Callable[[QueryGradients], dict[str, torch.Tensor | LowRankQueries]]
"""Query gradients → (G + λI)⁻¹ ∇L_q per layer (consuming them): EK-FAC's, or a solver's refinement of it."""


def preconditioned_queries(curvature: FittedCurvature, gradients: QueryGradients, options: ScoreOptions,
                           execution: Execution) -> dict[str, torch.Tensor | LowRankQueries]:
    """(G + λI)⁻¹ ∇L_q per layer, truncated to rank ``options.query_rank`` when given.

    Precision policy: formed in float32 (the accumulation dtype) on the execution's device, one layer's factors
    there at a time. Consumes ``gradients.factors`` layer by layer.
    """
    result: dict[str, torch.Tensor | LowRankQueries] = {}
    for name in list(gradients.factors):
        ds, a = (t.to(execution.accumulation_dtype) for t in gradients.factors.pop(name))
        V = curvature.layers[name].to(execution.device).precondition(ds, a, options.damping)
        result[name] = V if options.query_rank is None else low_rank(V, options.query_rank)
    return result


def score(model: nn.Module, tokenizer: object, layers: list[TrackedLayer], curvature: FittedCurvature,
          queries: list[Query], sequences: list[TrainingSequence], options: ScoreOptions,
          quiet: bool = False, checkpoints: Checkpoints | None = None, execution: Execution | None = None,
          gradients: QueryGradients | None = None, precondition: Precondition | None = None,
          unit: str | None = None) -> ScoreResult:
    """Influence of every training sequence on every query, with the decompositions ``options`` asks for.

    ``gradients`` are the queries' gradients when the caller has them already; they are consumed. ``precondition``
    defaults to EK-FAC's (:func:`preconditioned_queries`); `--refine` gives
    :func:`wherefrom.solvers.refine.query_preconditioner`'s. With ``unit`` (a name of
    :mod:`wherefrom.models.units`) only the influence through that unit is scored. Default execution: where
    ``model`` is, one process.
    """
    if precondition is None and options.refine != "none":
        raise ValueError(f"refine={options.refine!r} needs the solver's precondition (solvers.refine.query_preconditioner)")
    execution = execution or Execution.of(model)
    world = execution.world
    gradients = gradients or query_gradients(model, layers, queries, options.batch_size, quiet or not world.is_main,
                                             execution)
    lengths = torch.tensor([len(s.input_ids) for s in sequences])
    offsets = torch.cat([torch.zeros(1, dtype=torch.long), lengths.cumsum(0)]) if options.per_token else None
    tokens_of_top = options.per_token and options.per_token_top is not None  # by a second pass, once ranked
    self_curvature = {layer.name: (curvature.layers[layer.name], options.damping) for layer in layers} \
        if options.self_influence or options.normalize else None
    query_self = query_self_influence(curvature, gradients, options.damping) if options.normalize else None
    queries_V = (precondition or (lambda g: preconditioned_queries(curvature, g, options, execution)))(gradients)
    units = unit_map(model, layers, options.unit_view) if options.per_unit and unit is None else None
    checkpoints = checkpoints or Checkpoints(None, "")
    plan = PassPlan([s.input_ids for s in sequences], [1] * len(sequences), options.batch_size, options.shard_size)
    positions = None if unit is None else find_unit(model, layers, unit)
    if positions is not None:
        queries_V = restrict_queries(queries_V, positions)
        layers = [layer for layer in layers if layer.name in positions]

    def make() -> ScoreAccumulator | UnitScanAccumulator:
        accumulator = ScoreAccumulator(queries_V, len(queries), len(sequences), options.per_layer,
                                       None if tokens_of_top else offsets, self_curvature, execution, units,
                                       options.top_k)
        return accumulator if positions is None else UnitScanAccumulator(accumulator, positions)

    accumulator = run_pass(model, layers, plan, Labels("data"), "scores", "scoring sequences", make, checkpoints,
                           execution, quiet)
    accumulator = accumulator if positions is None else accumulator.inner
    unit_influence = None
    if units is not None:
        unit_influence = unit_summary(accumulator, units, options)
        if options.per_token:
            unit_influence.tokens = unit_token_maps(model, layers, accumulator.queries, unit_influence, units, sequences,
                                                    options, checkpoints, execution, quiet)
    detailed = set() if unit_influence is None else set(unit_influence.rows.flatten().tolist())
    scores = accumulator.score_matrix()
    cosines = None if query_self is None else cosine(accumulator.scores.sum(0), query_self,
                                                     accumulator.self_influence).to(accumulator.dtype)
    per_token, token_rows = accumulator.per_token, None
    if tokens_of_top:
        ranking = scores if cosines is None else cosines
        token_rows = torch.topk(ranking, min(options.per_token_top, len(sequences)), dim=1).indices
        per_token = top_token_scores(model, layers, accumulator.queries, token_rows, sequences, offsets, options,
                                     checkpoints, execution, quiet)
        detailed |= set(token_rows.flatten().tolist())
    return ScoreResult(
        scores=scores,
        sequences=[sequence_info(s, tokenizer, (options.per_token and not tokens_of_top) or column in detailed)
                   for column, s in enumerate(sequences)],
        queries=query_infos(queries, gradients.logprobs),
        layer_names=[layer.name for layer in layers],
        per_layer=accumulator.scores.to(accumulator.dtype) if options.per_layer else None,
        per_token=per_token,
        token_offsets=offsets,
        token_rows=token_rows,
        self_influence=None if accumulator.self_influence is None else accumulator.self_influence.to(accumulator.dtype),
        units=unit_influence,
        cosine=cosines,
        query_self_influence=query_self,
    )


def query_infos(queries: list[Query], logprobs: torch.Tensor) -> list[QueryInfo]:
    """The score matrix's rows: each query with its completion's log-probability under the model."""
    return [QueryInfo(i, q.id, q.prompt, q.completion, list(q.prompt_ids), list(q.completion_ids), float(logprobs[i]),
                      None if q.generation is None else asdict(q.generation))
            for i, q in enumerate(queries)]


def sequence_info(sequence: TrainingSequence, tokenizer: object, with_tokens: bool) -> SequenceInfo:
    """A score column: the sequence's corpus row and text, and its token pieces when per-token scores are kept."""
    ids = list(sequence.input_ids)
    tokens = [tokenizer.decode([t]) for t in ids] if with_tokens else []
    return SequenceInfo(sequence.row, sequence.record_id, sequence.start, sequence.end, tokenizer.decode(ids), tokens)
