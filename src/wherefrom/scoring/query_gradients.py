"""Query gradients per layer: ∇_W̄ L_q = Σ_t Ds_t ā_tᵀ over the query's positions, L_q = -log p(completion).

They are kept factored, as the rows Ds_t and ā_t (rank ≤ query length), which makes rotating them into the
Kronecker eigenbasis cheap: Q_Sᵀ (Σ_t Ds_t ā_tᵀ) Q_A = Σ_t (Q_Sᵀ Ds_t)(Q_Aᵀ ā_t)ᵀ.
"""

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
    """Per layer the factors (Ds [Q, T, out], ā [Q, T, in(+1)]) of each query's gradient, zero-padded to the
    longest query, and each query's log p(completion | prompt) in nats."""

    factors: dict[str, tuple[torch.Tensor, torch.Tensor]]
    logprobs: torch.Tensor

    def dense(self, name: str) -> torch.Tensor:
        """Layer ``name``'s query gradients as matrices [Q, out, in(+1)]."""
        ds, a = self.factors[name]
        return torch.einsum("qto,qti->qoi", ds, a)


def query_gradients(model: nn.Module, layers: list[TrackedLayer], queries: list[Query], batch_size: int,
                    quiet: bool = False) -> QueryGradients:
    """Stream the queries with data labels on completion tokens only and keep each layer's ā and Ds rows."""
    dtype = next(model.parameters()).dtype
    width = max(len(q.input_ids) for q in queries)
    factors = {layer.name: (torch.zeros(len(queries), width, layer.shape.out_features, dtype=dtype),
                        torch.zeros(len(queries), width, layer.shape.in_dim, dtype=dtype)) for layer in layers}
    logprobs = torch.zeros(len(queries), dtype=torch.float64)
    batches = make_batches([q.input_ids for q in queries], [len(q.prompt_ids) for q in queries], batch_size)
    n_batches = -(-len(queries) // batch_size)
    for item in stream(model, layers, batches, n_batches, Labels("data"), "query gradients", quiet):
        rows, length = item.batch.rows, item.batch.input_ids.shape[1]
        logprobs[rows] = -item.loss.double()
        for name, layer in item.layers.items():
            ds, a = factors[name]
            ds[rows, :length] = layer.output_grads
            a[rows, :length] = layer.inputs
    return QueryGradients(factors, logprobs)
