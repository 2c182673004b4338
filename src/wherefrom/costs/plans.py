"""Dry runs of `fit` and `score`: load the model, build the sequences, time each pass on a sample, add up shapes.

Nothing is written. Each pass's time is measured on a few of its own batches, scaled to all of them (one
process; under torchrun the passes split across processes), see costs/timing.py; the eigendecompositions are
those the fit will do (a factor shared by layers reading one input once), each distinct size timed once.
"""

from __future__ import annotations

import json
from dataclasses import asdict, replace
from pathlib import Path

import torch

from wherefrom.costs import memory
from wherefrom.costs.estimate import CostEstimate, Stage
from wherefrom.costs.experts import experts_note
from wherefrom.costs.index_plan import index_contraction_stage
from wherefrom.costs.timing import SampleMeasure, eigh_seconds, measure_pass, sample_rows
from wherefrom.curvature.blocks import BlockDiagonal, block_sizes, check_factor_blocks
from wherefrom.curvature.correction import CorrectionAccumulator
from wherefrom.curvature.covariance import CovarianceAccumulator
from wherefrom.curvature.opening import open_run
from wherefrom.data.corpus import build_sequences
from wherefrom.data.queries import read_queries
from wherefrom.data.records import read_records
from wherefrom.engine.execution import load_for_execution, start_execution
from wherefrom.engine.passes import PassPlan
from wherefrom.engine.stream import Labels
from wherefrom.index.store import GradientIndex
from wherefrom.models.loading import LoadedModel
from wherefrom.models.positions import cap_max_length
from wherefrom.models.selection import TrackedLayer, select_layers
from wherefrom.models.units import unit_map
from wherefrom.options import ExecutionOptions, FitOptions, ScoreOptions
from wherefrom.scoring.contract import ScoreAccumulator
from wherefrom.scoring.lowrank import LowRankQueries
from wherefrom.scoring.scorer import sequence_info
from wherefrom.scoring.unit_pass import MAPPED_SEQUENCES

_FLOAT_CHARS = 24  # a float in JSON with its separator and, in a dict, its quotes and colon


def estimate_fit(model: str | Path | LoadedModel, corpus: str | Path, options: FitOptions = FitOptions(),
                 execution_options: ExecutionOptions = ExecutionOptions(), allow_pickle: bool = False) -> CostEstimate:
    """What `wherefrom fit` with these arguments will cost, from shapes and a timed sample, and where the factor
    sums will live (the same decision `fit` makes)."""
    loaded = model if isinstance(model, LoadedModel) else load_for_execution(model, execution_options,
                                                                             allow_pickle=allow_pickle)
    options = replace(options, max_length=cap_max_length(loaded.model, options.max_length))
    layers = select_layers(loaded.model, options.modules)
    blocks = options.factor_blocks
    if options.strategy in ("kfac", "ekfac"):
        check_factor_blocks(layers, blocks)
    sequences = build_sequences(read_records(corpus), loaded.tokenizer, options.max_length, options.pack)
    tokens = [s.input_ids for s in sequences]
    execution = start_execution(loaded.model, execution_options, memory.factor_sum_bytes(layers, blocks, torch.float32))
    dtype, summed = execution.dtype, execution.accumulation_dtype
    labels = Labels("sampled" if options.fisher == "sampled" else "data", options.seed)
    shapes = {layer.name: (layer.shape.out_features, layer.shape.in_dim) for layer in layers}
    covariances: list[CovarianceAccumulator] = []  # the sample's sums tell which layers share an input
    makers = {
        "covariance": lambda _: covariances.append(CovarianceAccumulator(layers, execution, blocks)) or covariances[-1],
        # Identity bases cost the same dense (or block) products as the fitted ones.
        "correction": lambda _: CorrectionAccumulator(_identity_bases(layers, blocks, summed), shapes, execution),
        "diagonal": lambda _: CorrectionAccumulator({name: (None, None) for name in shapes}, shapes, execution),
    }
    passes = {"ekfac": ["covariance", "correction"], "kfac": ["covariance"], "diagonal": ["diagonal"],
              "identity": []}[options.strategy]
    plan = PassPlan(tokens, [1] * len(tokens), options.batch_size, options.shard_size)
    measured: dict[str, SampleMeasure] = {}
    for name in passes:
        measured[name] = measure_pass(loaded.model, layers, plan, labels, makers[name], execution)
    weights = memory.weights_bytes(loaded.model)
    n, longest = len(sequences), max(len(t) for t in tokens)
    factors = memory.factor_sum_bytes(layers, blocks, summed)
    eigenvalues = memory.eigenvalue_bytes(layers, summed)
    scratch = memory.per_sequence_gradient_bytes(layers, options.batch_size, dtype)
    # With the sums in host memory the device holds one layer's block of this batch at a time.
    on_device = memory.largest_block(layers, blocks) ** 2 * memory.itemsize(summed) if execution.factors_on_host \
        else factors
    stages = [Stage("model", weights, 0.0, "parameters and buffers")]
    for name in passes:
        batch = _batch_bytes(measured[name], layers, options.batch_size, longest, dtype)
        held = {"covariance": on_device, "correction": on_device + eigenvalues + scratch,
                "diagonal": eigenvalues + scratch}[name]
        stages.append(Stage(f"{name} pass", weights + batch + held, measured[name].seconds,
                            measured[name].describe()))
        if name == "covariance":
            largest = memory.largest_block(layers, blocks)
            dims = _decomposed_sizes(layers, blocks, covariances[0])
            at_once = torch.get_num_threads() if execution.factor_device.type == "cpu" else 1
            stages.append(Stage("eigendecompositions",
                                weights + factors + memory.eigen_work_bytes(layers, blocks, at_once),
                                eigh_seconds(dims, execution.factor_device),
                                f"{len(dims)} float64, largest {largest}×{largest}; each size timed once"))
    manifest = {"layers": [{"name": layer.name, "type": layer.layer_type.__name__} for layer in layers],
                "options": asdict(options)}
    disk = {"factors.safetensors": memory.safetensors_bytes(memory.factor_file_shapes(layers, options.strategy,
                                                                                      blocks, summed)),
            "manifest.json": len(json.dumps(manifest, indent=2)) + 1024}
    notes = _notes(len(passes)) + ([f"factor sums in host memory ({factors / 2 ** 30:.1f} GiB float32): more than "
                                    "half of the GPU memory left free next to the model"]
                                   if execution.factors_on_host else []) + experts_note(layers, blocks, summed)
    return CostEstimate("fit", n, sum(len(t) for t in tokens),
                        {name: m.seconds_per_sequence for name, m in measured.items()}, stages, disk,
                        notes, execution.describe())


def estimate_score(run: str | Path | None, queries: str | Path, corpus: str | Path | None = None,
                   options: ScoreOptions | None = None, index: str | Path | None = None,
                   execution_options: ExecutionOptions = ExecutionOptions()) -> CostEstimate:
    """What `wherefrom score` with these arguments will cost (prompt-only queries count --max-new-tokens tokens).

    With ``index`` the scoring pass is replaced by the index's contraction, timed on the index, and the exact
    scoring of its top ``rescore`` sequences per query (at most that many per query, fewer where queries share them).
    """
    opened = open_run(run if run is not None else GradientIndex.open(index).run_folder, execution=execution_options)
    fitted, factors, loaded, layers = opened.fitted, opened.factors, opened.loaded, opened.layers
    options = options or ScoreOptions(**opened.data)
    options = replace(options, max_length=cap_max_length(loaded.model, options.max_length))
    execution = start_execution(loaded.model, execution_options)
    query_list = read_queries(queries, loaded.tokenizer, options.max_length)
    query_length = max(len(q.input_ids) + (options.max_new_tokens if q.needs_completion else 0) for q in query_list)
    if corpus is None and index is not None:
        corpus = GradientIndex.open(index).manifest["corpus"]
    sequences = opened.sequences(corpus, options.max_length, options.pack)
    tokens = [s.input_ids for s in sequences]
    dtype, summed = execution.dtype, execution.accumulation_dtype
    n, n_queries, longest, n_tokens = len(sequences), len(query_list), max(len(t) for t in tokens), sum(map(len, tokens))
    size = memory.itemsize(dtype)
    rank = options.query_rank
    V = {layer.name: _random_queries(n_queries, layer, rank, dtype) for layer in layers}
    self_curvature = {layer.name: (factors.curvature.layers[layer.name], options.damping)
                      for layer in layers} if options.self_influence else None
    units = unit_map(loaded.model, layers, options.unit_view) if options.per_unit else None
    n_units, top_k = 0 if units is None else len(units), min(options.top_k, n)

    tokens_of_top = options.per_token and options.per_token_top is not None  # a second pass, as score runs it
    with_tokens = min(n, n_queries * options.per_token_top) if tokens_of_top else n  # sequences split per token

    def make(lengths: list[int], per_token: bool = options.per_token and not tokens_of_top) -> ScoreAccumulator:
        offsets = torch.tensor([0, *lengths]).cumsum(0) if per_token else None
        return ScoreAccumulator(V, n_queries, len(lengths), options.per_layer, offsets, self_curvature, execution,
                                units, top_k)

    plan = PassPlan(tokens, [1] * n, options.batch_size, options.shard_size)
    measured = measure_pass(loaded.model, layers, plan, Labels("data"), make, execution)
    weights = memory.weights_bytes(loaded.model)
    widths = sum(layer.shape.in_dim + layer.shape.out_features for layer in layers)
    gradients = n_queries * query_length * widths * size
    preconditioned = n_queries * size * sum(layer.shape.out_features * layer.shape.in_dim if rank is None
                                            else rank * (layer.shape.out_features + layer.shape.in_dim)
                                            for layer in layers)
    factor_file = memory.factor_file_shapes(layers, factors.strategy, fitted.get("factor_blocks", 1), summed)
    factor_bytes = memory.safetensors_bytes(factor_file)
    # --per-unit: the layers split over their columns keep Vᵀ beside V, in full whatever --query-rank
    transposed = 0 if units is None else n_queries * size * sum(
        layer.shape.out_features * layer.shape.in_dim for layer in layers
        if layer.name in units.layers and units.layers[layer.name].axis == "column")
    accumulators = (transposed + (len(layers) if options.per_layer else 1) * n_queries * n * 8
                    + (n_queries * n_tokens * size if options.per_token else 0)
                    + (n * 8 + factor_bytes if options.self_influence else 0)
                    # --per-unit: positive sums, the top sequences' splits (twice while merging), one batch's split
                    + n_queries * n_units * (8 + 2 * 4 * top_k + 8 * options.batch_size))
    batch = _batch_bytes(measured, layers, options.batch_size, longest, dtype)
    stages = [
        Stage("model", weights, 0.0, "parameters and buffers"),
        Stage("query gradients", weights + gradients + _batch_bytes(measured, layers, options.batch_size,
                                                                    query_length, dtype),
              measured.seconds_per_sequence * n_queries, f"{n_queries} queries of up to {query_length} tokens"),
        Stage("preconditioning", weights + gradients + preconditioned + factor_bytes // max(1, len(layers)), 0.0,
              "one layer's factors at a time" + ("" if rank is None else f"; rank {rank}")),
        Stage("scoring pass", weights + batch + preconditioned + accumulators,
              measured.seconds, measured.describe()),
    ]
    if index is not None:
        rescored = min(n, n_queries * options.rescored_per_query)
        stages[-1:] = [index_contraction_stage(index, n_queries, execution.device)] + ([Stage(
            "re-scoring the index's top", weights + batch + preconditioned, measured.seconds_per_sequence * rescored,
            f"at most {rescored} sequences (each query's top {options.rescored_per_query}), scored exactly")]
            if rescored else [])
    if tokens_of_top:  # each sequence streamed again, plus each query's token terms on its own top N
        split = measure_pass(loaded.model, layers, plan, Labels("data"), lambda lengths: make(lengths, True), execution)
        terms = max(0.0, split.seconds_per_sequence - measured.seconds_per_sequence) / n_queries
        stages.append(Stage(
            "token shares of the top sequences", weights + batch + preconditioned + accumulators,
            measured.seconds_per_sequence * with_tokens + terms * n_queries * options.per_token_top,
            f"at most {with_tokens} sequences (each query's top {options.per_token_top}), split per token"))
    shapes = memory.score_file_shapes(n_queries, n, n_tokens, len(layers), options.per_layer, options.per_token,
                                      options.self_influence)
    if options.per_unit:
        shapes.update(memory.unit_file_shapes(n_queries, min(options.per_unit, n_units), top_k,
                                              min(top_k, MAPPED_SEQUENCES), longest, options.per_token))
    row_bytes = _sequence_row_bytes(loaded.tokenizer, sequences, False)
    if options.per_token:
        row_bytes += (_sequence_row_bytes(loaded.tokenizer, sequences, True) - row_bytes) * with_tokens / n
    tokens_per_entry = n_tokens / n * (min(1.0, options.per_token_top / top_k) if tokens_of_top else 1.0)
    result_bytes = (row_bytes + (sum(len(layer.name) + _FLOAT_CHARS for layer in layers) if options.per_layer else 0)
                    + (tokens_per_entry * _FLOAT_CHARS if options.per_token else 0))
    disk = {"scores.safetensors": memory.safetensors_bytes(shapes), "sequences.jsonl": round(row_bytes * n),
            "results.jsonl": round(result_bytes * n_queries * min(options.top_k, n))}
    prompt_only = sum(q.needs_completion for q in query_list)
    notes = _notes(0 if index is not None else 1) + (
        [f"{prompt_only} prompt-only queries: generation time not included"] if prompt_only else [])
    return CostEstimate("score", n, n_tokens, {"scores": measured.seconds_per_sequence}, stages, disk, notes,
                        execution.describe())


def _batch_bytes(measured: SampleMeasure, layers: list[TrackedLayer], batch_size: int, length: int,
                 dtype: torch.dtype) -> int:
    """One batch of the longest sequences: the autograd graph (measured per token) and the captured ā, Ds."""
    return round(measured.graph_bytes_per_token * batch_size * length) + memory.captured_bytes(
        layers, batch_size, length, dtype)


def _identity_bases(layers: list[TrackedLayer], blocks: int, dtype: torch.dtype) -> dict[str, tuple]:
    eyes: dict[int, object] = {}

    def eye(dim: int) -> object:
        if dim not in eyes:
            parts = tuple(torch.eye(size, dtype=dtype) for size in block_sizes(dim, blocks))
            eyes[dim] = parts[0] if blocks == 1 else BlockDiagonal(parts)
        return eyes[dim]

    return {layer.name: (eye(layer.shape.in_dim), eye(layer.shape.out_features)) for layer in layers}


def _random_queries(n_queries: int, layer: TrackedLayer, rank: int | None, dtype: torch.dtype
                    ) -> torch.Tensor | LowRankQueries:
    """Preconditioned queries of the right shape (their values do not change the cost)."""
    out, n_in = layer.shape.out_features, layer.shape.in_dim
    if rank is None:
        return torch.randn(n_queries, out, n_in, dtype=dtype)
    return LowRankQueries(torch.randn(n_queries, out, rank, dtype=dtype), torch.randn(n_queries, n_in, rank, dtype=dtype))


def _sequence_row_bytes(tokenizer: object, sequences: list, with_tokens: bool) -> float:
    """Mean bytes of one sequences.jsonl row, over a sample of sequences."""
    rows = [sequences[r] for r in sample_rows(len(sequences), 32)]
    text = [json.dumps(asdict(sequence_info(s, tokenizer, with_tokens)), ensure_ascii=False) for s in rows]
    return sum(len(t.encode()) + 1 for t in text) / len(rows)


def _decomposed_sizes(layers: list[TrackedLayer], blocks: int, sample: CovarianceAccumulator) -> list[int]:
    """The size of every eigendecomposition the fit does: A and S of each layer, block by block, but A once for
    consecutive layers reading the same input (their sums on the sample are equal, as the fit finds them)."""
    shares_A = sample.shared_inputs([layer.name for layer in layers])
    return [dim for layer in layers
            for dim in [*([] if layer.name in shares_A else block_sizes(layer.shape.in_dim, blocks)),
                        *block_sizes(layer.shape.out_features, blocks)]]


def _notes(passes: int) -> list[str]:
    first = (f"{passes} pass(es) over the corpus; times are for one process (torchrun splits the passes)" if passes
             else "no pass over the whole corpus: the gradient index ranks it")
    return [first,
            "memory: peak of each stage from shapes, the autograd graph measured on a sample batch and scaled to "
            "the longest sequence"]
