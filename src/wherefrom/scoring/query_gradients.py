"""Query gradients per layer: ∇_W̄ L_q = Σ_t Ds_t ā_tᵀ over the query's positions, L_q = -log p(completion).

They are kept factored, as the rows Ds_t and ā_t (rank ≤ query length), which makes rotating them into the
Kronecker eigenbasis cheap: Q_Sᵀ (Σ_t Ds_t ā_tᵀ) Q_A = Σ_t (Q_Sᵀ Ds_t)(Q_Aᵀ ā_t)ᵀ.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from wherefrom.data.batching import Batch, make_batches
from wherefrom.data.queries import Query
from wherefrom.engine.execution import Execution
from wherefrom.engine.stream import Labels, LayerBatch, LayerConsumer, stream
from wherefrom.models.selection import TrackedLayer


@dataclass
class QueryGradients:
    """Per layer the factors (Ds [Q, T, out], ā [Q, T, in(+1)]) of each query's gradient, zero-padded to the
    longest query, in the model's dtype on its device, and each query's log p(completion | prompt) in nats."""

    factors: dict[str, tuple[torch.Tensor, torch.Tensor]]
    logprobs: torch.Tensor

    def dense(self, name: str, dtype: torch.dtype | None = None) -> torch.Tensor:
        """Layer ``name``'s query gradients as matrices [Q, out, in(+1)], summed over positions in ``dtype``
        (default: the factors' own)."""
        ds, a = (t.to(dtype or t.dtype) for t in self.factors[name])
        return torch.einsum("qto,qti->qoi", ds, a)


class _Keeper(LayerConsumer):
    """Copies each batch's ā and Ds rows into the queries' factors, and the loss into the log-probabilities."""

    def __init__(self, gradients: QueryGradients) -> None:
        self.gradients = gradients
        self.rows, self.length = torch.zeros(0, dtype=torch.long), 0

    def begin(self, batch: Batch) -> None:
        self.rows, self.length = batch.rows, batch.input_ids.shape[1]

    def layer(self, name: str, layer: LayerBatch) -> None:
        ds, a = self.gradients.factors[name]
        ds[self.rows, :self.length] = layer.output_grads
        a[self.rows, :self.length] = layer.inputs

    def end(self, loss: torch.Tensor) -> None:
        self.gradients.logprobs[self.rows] = -loss.double().cpu()


def query_gradients(model: nn.Module, layers: list[TrackedLayer], queries: list[Query], batch_size: int,
                    quiet: bool = False, execution: Execution | None = None) -> QueryGradients:
    """Stream the queries with data labels on completion tokens only and keep each layer's ā and Ds rows."""
    execution = execution or Execution.of(model)
    width = max(len(q.input_ids) for q in queries)
    device, dtype = execution.device, execution.dtype
    factors = {layer.name: (torch.zeros(len(queries), width, layer.shape.out_features, dtype=dtype, device=device),
                            torch.zeros(len(queries), width, layer.shape.in_dim, dtype=dtype, device=device))
               for layer in layers}
    gradients = QueryGradients(factors, torch.zeros(len(queries), dtype=torch.float64))
    batches = make_batches([q.input_ids for q in queries], [len(q.prompt_ids) for q in queries], batch_size,
                           device=device)
    n_batches = -(-len(queries) // batch_size)
    for _ in stream(model, layers, batches, n_batches, Labels("data"), _Keeper(gradients), "query gradients", quiet):
        pass
    return gradients
