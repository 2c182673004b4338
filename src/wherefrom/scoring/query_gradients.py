"""Query gradients per layer: ∇_W̄ L_q = Σ_t Ds_t ā_tᵀ over the completion's predictions, L_q = -log p(completion)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from wherefrom.data.batching import make_batches
from wherefrom.data.queries import Query
from wherefrom.engine.stream import Labels, stream
from wherefrom.models.selection import TrackedLayer


@dataclass
class QueryGradients:
    """Each layer's query gradients [Q, out, in(+1)] and each query's log p(completion | prompt) in nats."""

    grads: dict[str, torch.Tensor]
    logprobs: torch.Tensor


def query_gradients(model: nn.Module, layers: list[TrackedLayer], queries: list[Query], batch_size: int,
                    quiet: bool = False) -> QueryGradients:
    """Stream the queries with data labels on completion tokens only and contract ā with Ds per query."""
    dtype = next(model.parameters()).dtype
    grads = {l.name: torch.zeros(len(queries), l.shape.out_features, l.shape.in_dim, dtype=dtype) for l in layers}
    logprobs = torch.zeros(len(queries), dtype=torch.float64)
    batches = make_batches([q.input_ids for q in queries], [len(q.prompt_ids) for q in queries], batch_size)
    n_batches = -(-len(queries) // batch_size)
    for item in stream(model, layers, batches, n_batches, Labels("data"), "query gradients", quiet):
        rows = item.batch.rows
        logprobs[rows] = -item.loss.double()
        for name, layer in item.layers.items():
            grads[name][rows] = torch.einsum("bto,bti->boi", layer.output_grads, layer.inputs)
    return QueryGradients(grads, logprobs)
