"""Dry runs of `index` and of `score --index`: the indexing pass timed on a sample, the index's size from shapes,
and the contraction of a query with every row timed on the index itself."""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from wherefrom.costs import memory
from wherefrom.costs.estimate import CostEstimate, Stage
from wherefrom.costs.timing import measure_pass
from wherefrom.curvature.opening import open_run
from wherefrom.engine.execution import start_execution
from wherefrom.engine.passes import PassPlan
from wherefrom.engine.stream import Labels
from wherefrom.index.budget import BITS, RowLayout
from wherefrom.index.building import IndexWriter
from wherefrom.index.projection import LayerProjection, choose_projections
from wherefrom.index.store import GradientIndex
from wherefrom.models.positions import cap_max_length
from wherefrom.options import ExecutionOptions, IndexOptions

_NPY_HEADER = 128


def estimate_index(run: str | Path, corpus: str | Path | None, options: IndexOptions,
                   execution_options: ExecutionOptions = ExecutionOptions()) -> CostEstimate:
    """What `wherefrom index` with these arguments will cost, from shapes and a timed sample."""
    opened = open_run(run, execution=execution_options)
    loaded, layers = opened.loaded, opened.layers
    options = replace(options, max_length=cap_max_length(loaded.model, options.max_length))
    execution = start_execution(loaded.model, execution_options)
    layout, projections = choose_projections({layer.name: opened.curvature.layers[layer.name] for layer in layers},
                                             options.budget, options.compression)
    sequences = opened.sequences(corpus, options.max_length, options.pack)
    tokens = [s.input_ids for s in sequences]
    dtype = execution.dtype

    def make(lengths: list[int]) -> IndexWriter:
        n_rows = len(lengths)
        return IndexWriter(projections, opened.curvature, (np.zeros((n_rows, layout.stored_columns), layout.storage_dtype),
                                                           np.zeros(n_rows, np.float32), np.zeros(n_rows, np.float32)),
                           execution.device)

    plan = PassPlan(tokens, [1] * len(tokens), options.batch_size, options.shard_size)
    measured = measure_pass(loaded.model, layers, plan, Labels("data"), make, execution)
    n, longest = len(sequences), max(len(t) for t in tokens)
    weights = memory.weights_bytes(loaded.model)
    rotated = options.batch_size * max(layer.shape.out_features * layer.shape.in_dim for layer in layers) * 4
    bases = sum(p.Q_S.numel() * 4 + p.Q_A.numel() * 4 + p.eigenvalues.numel() * 4 for p in projections.values())
    rows = options.batch_size * layout.values * 4  # the batch's rows in float32 before they are stored
    batch = round(measured.graph_bytes_per_token * options.batch_size * longest) + memory.captured_bytes(
        layers, options.batch_size, longest, dtype)
    stages = [Stage("model", weights, 0.0, "parameters and buffers"),
              Stage("indexing pass", weights + bases + batch + rotated + rows, measured.seconds,
                    f"{measured.describe()}; rows go straight to the memory-mapped file")]
    disk = {"gradients.npy": n * (layout.bytes_per_sequence - 4) + _NPY_HEADER,
            "scales.npy": n * 4 + _NPY_HEADER, "self_influence.npy": n * 4 + _NPY_HEADER,
            "projections.safetensors": memory.safetensors_bytes(
                {f"{name}/{part}": (tuple(tensor.shape), tensor.dtype)
                 for name, p in projections.items() for part, tensor in p.tensors().items()})}
    return CostEstimate("index", n, sum(map(len, tokens)), {"index": measured.seconds_per_sequence}, stages, disk,
                        [budget_note(layout, projections, n, options.budget)], execution.describe())


def budget_note(layout: RowLayout, projections: dict[str, LayerProjection], n_sequences: int, budget: str) -> str:
    """The row the budget buys, the index's size, and how the values spread over the layers."""
    per_layer = [p.size for p in projections.values()]
    whole = sum(p.Q_S.shape[0] * p.Q_A.shape[0] for p in projections.values())
    if layout.dtype == BITS:
        what = (f"a CountSketch of all {whole:,} entries, whitened, into {layout.values:,} one-bit buckets, and a "
                "float32 scale")
    else:
        what = (f"{layout.values:,} {layout.dtype} values of the {whole:,} entries, {layout.values / whole:.2%}, and a "
                f"float32 scale; values per layer {min(per_layer):,} to {max(per_layer):,}, chosen by Λ/(Λ+λ) over all "
                "layers")
    return (f"--budget {budget}: {layout.bytes_per_sequence:,} bytes per sequence ({what}); index "
            f"{layout.bytes_per_sequence * n_sequences / 1e6:,.1f} MB for {n_sequences:,} sequences")


def index_contraction_stage(index_dir: str | Path, n_queries: int, device: torch.device, repeats: int = 3) -> Stage:
    """The contraction of ``n_queries`` queries with every row of an existing index on ``device``, timed on the
    index itself."""
    index = GradientIndex.open(index_dir).to(device)
    queries = torch.randn(n_queries, index.values)
    clock = time.perf_counter()
    for _ in range(repeats):
        index.contract(queries)
    seconds = (time.perf_counter() - clock) / repeats
    rows = min(index.n_sequences, index.chunk_rows)
    chunk = rows * index.gradients.shape[1] * index.gradients.itemsize
    unpacked = rows * index.values if index.manifest.get("compression") == "sketch" else 0  # bits → int8
    widened = 0 if index.device.type == "cpu" else rows * index.values * 4  # float32 on a GPU
    return Stage("index contraction", chunk + unpacked + widened + n_queries * index.n_sequences * 4, seconds,
                 f"{index.n_sequences} rows × {index.values:,} {index.manifest.get('dtype', 'float16')} numbers on "
                 f"{index.device}, timed on the index")
