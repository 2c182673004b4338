"""K-FAC covariances A = E[ā āᵀ] and S = E[Ds Dsᵀ] over non-padding tokens (Grosse et al. eq. 16-17)."""

from __future__ import annotations

import torch

from wherefrom.engine.stream import StreamBatch
from wherefrom.models.selection import TrackedLayer


class CovarianceAccumulator:
    """Consumes the stream and sums ā āᵀ and Ds Dsᵀ per layer; sums are kept in float64."""

    def __init__(self, layers: list[TrackedLayer]) -> None:
        self.A_sum = {l.name: torch.zeros(l.shape.in_dim, l.shape.in_dim, dtype=torch.float64) for l in layers}
        self.S_sum = {l.name: torch.zeros(l.shape.out_features, l.shape.out_features, dtype=torch.float64)
                      for l in layers}
        self.n_tokens = 0
        self.n_sequences = 0

    def update(self, item: StreamBatch) -> None:
        """Add one batch (padding rows of ā and Ds are zero, so they add nothing)."""
        self.n_tokens += int(item.batch.attention_mask.sum())
        self.n_sequences += item.batch.rows.numel()
        shared: dict[int, torch.Tensor] = {}  # layers reading the same ā (e.g. gate_proj and up_proj) share ā āᵀ
        for name, layer in item.layers.items():
            a = layer.inputs
            if id(a) not in shared:
                flat = a.reshape(-1, a.shape[-1])
                shared[id(a)] = (flat.T @ flat).double()
            self.A_sum[name] += shared[id(a)]
            ds = layer.output_grads.reshape(-1, layer.output_grads.shape[-1])
            self.S_sum[name] += (ds.T @ ds).double()

    def covariances(self) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """Per layer (A, S), each divided by the number of tokens."""
        return {name: (self.A_sum[name] / self.n_tokens, self.S_sum[name] / self.n_tokens) for name in self.A_sum}
