"""K-FAC covariances A = E[ā āᵀ] and S = E[Ds Dsᵀ] over predicting tokens (Grosse et al. eq. 16-17).

A predicting token is a position whose output predicts a target (every token but a sequence's last): the last
position's Ds is exactly zero, so counting its ā āᵀ in A would bias K-FAC's Kronecker product by about 1/T.
"""

from __future__ import annotations

import torch

from wherefrom.engine.stream import StreamBatch
from wherefrom.models.selection import TrackedLayer


class CovarianceAccumulator:
    """Consumes the stream and sums ā āᵀ and Ds Dsᵀ per layer; sums are kept in float64."""

    def __init__(self, layers: list[TrackedLayer]) -> None:
        self.sums: dict[str, torch.Tensor] = {"n_tokens": torch.zeros((), dtype=torch.float64),
                                              "n_sequences": torch.zeros((), dtype=torch.float64)}
        for l in layers:
            self.sums[f"A/{l.name}"] = torch.zeros(l.shape.in_dim, l.shape.in_dim, dtype=torch.float64)
            self.sums[f"S/{l.name}"] = torch.zeros(l.shape.out_features, l.shape.out_features, dtype=torch.float64)
        self.names = [l.name for l in layers]

    def update(self, item: StreamBatch) -> None:
        """Add one batch; only predicting tokens count (Ds is zero elsewhere, ā is masked here)."""
        predicting = torch.zeros_like(item.batch.target_mask)
        predicting[:, :-1] = item.batch.target_mask[:, 1:]
        self.sums["n_tokens"] += predicting.sum()
        self.sums["n_sequences"] += item.batch.rows.numel()
        shared: dict[int, torch.Tensor] = {}  # layers reading the same ā (e.g. gate_proj and up_proj) share ā āᵀ
        for name, layer in item.layers.items():
            a = layer.inputs
            if id(a) not in shared:
                flat = (a * predicting.unsqueeze(-1).to(a.dtype)).reshape(-1, a.shape[-1])
                shared[id(a)] = (flat.T @ flat).double()
            self.sums[f"A/{name}"] += shared[id(a)]
            ds = layer.output_grads.reshape(-1, layer.output_grads.shape[-1])
            self.sums[f"S/{name}"] += (ds.T @ ds).double()

    def state(self) -> dict[str, torch.Tensor]:
        return self.sums

    def merge(self, state: dict[str, torch.Tensor]) -> None:
        for key, value in state.items():
            self.sums[key] += value

    def totals(self) -> dict[str, torch.Tensor]:
        return self.sums

    @property
    def n_tokens(self) -> int:
        return int(self.sums["n_tokens"])

    @property
    def n_sequences(self) -> int:
        return int(self.sums["n_sequences"])

    def covariances(self) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """Per layer (A, S), each divided by the number of predicting tokens."""
        n = self.sums["n_tokens"]
        return {name: (self.sums[f"A/{name}"] / n, self.sums[f"S/{name}"] / n) for name in self.names}
