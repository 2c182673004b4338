"""K-FAC covariances A = E[ā āᵀ] and S = E[Ds Dsᵀ] over predicting tokens (Grosse et al. eq. 16-17).

A predicting token is a position whose output predicts a target (every token but a sequence's last): the last
position's Ds is exactly zero, so counting its ā āᵀ in A would bias K-FAC's Kronecker product by about 1/T.
Sums are kept in the model's dtype (their float32 round-off, ~1e-7·√batches, is far below the sampling noise);
float64 starts at the eigendecomposition, where it is needed. With ``blocks`` > 1 only the diagonal blocks of A and
S are summed (the block-diagonal approximation of appendix A, see `curvature/blocks.py`).
"""

from __future__ import annotations

import torch
from scipy.linalg import blas

from wherefrom.allocator import Workspace
from wherefrom.curvature.blocks import block_slices
from wherefrom.engine.passes import SummedTensors
from wherefrom.engine.stream import StreamBatch
from wherefrom.models.selection import TrackedLayer


def add_gram_upper(total: torch.Tensor, x: torch.Tensor) -> None:
    """total += xᵀx for x [n, d], filling at least the upper triangle of ``total`` [d, d].

    On CPU this is BLAS syrk into ``total`` itself: half the work of a matmul and no temporary.
    """
    if x.device.type == "cpu" and x.dtype == total.dtype and x.dtype in (torch.float32, torch.float64):
        syrk = blas.ssyrk if x.dtype == torch.float32 else blas.dsyrk
        # Row-major [n, d] is column-major [d, n], so syrk sees xᵀ without a copy; the row-major total seen
        # column-major is its transpose, whose lower triangle is total's upper one.
        syrk(1.0, x.contiguous().numpy().T, beta=1.0, c=total.numpy().T, trans=0, lower=1, overwrite_c=1)
    else:
        total += x.T @ x


def symmetric_from_upper(upper: torch.Tensor) -> torch.Tensor:
    """A symmetric matrix from its upper triangle."""
    return torch.triu(upper) + torch.triu(upper, diagonal=1).T


class CovarianceAccumulator(SummedTensors):
    """Consumes the stream and sums ā āᵀ and Ds Dsᵀ per layer (upper triangles), in ``blocks`` diagonal blocks."""

    def __init__(self, layers: list[TrackedLayer], dtype: torch.dtype = torch.float32, blocks: int = 1) -> None:
        self.sums: dict[str, torch.Tensor] = {"n_tokens": torch.zeros((), dtype=torch.float64),
                                              "n_sequences": torch.zeros((), dtype=torch.float64)}
        self.slices: dict[str, list[slice]] = {}
        for layer in layers:
            for factor, dim in (("A", layer.shape.in_dim), ("S", layer.shape.out_features)):
                self.slices[f"{factor}/{layer.name}"] = block_slices(dim, blocks)
                for i, cut in enumerate(self.slices[f"{factor}/{layer.name}"]):
                    size = cut.stop - cut.start
                    self.sums[f"{factor}/{layer.name}/{i}"] = torch.zeros(size, size, dtype=dtype)
        self.layers = layers
        self.workspace = Workspace()
        self.names = [layer.name for layer in layers]

    def update(self, item: StreamBatch) -> None:
        """Add one batch; only predicting tokens count (Ds is zero elsewhere, ā is masked here)."""
        predicting = torch.zeros_like(item.batch.target_mask)
        predicting[:, :-1] = item.batch.target_mask[:, 1:]
        self.sums["n_tokens"] += predicting.sum()
        self.sums["n_sequences"] += item.batch.rows.numel()
        masked: dict[int, torch.Tensor] = {}  # layers reading the same ā (e.g. gate_proj and up_proj) share it
        for name, layer in item.layers.items():
            a = layer.inputs
            if id(a) not in masked:
                buffer = self.workspace.get("masked", a.shape, a.dtype)
                torch.mul(a, predicting.unsqueeze(-1).to(a.dtype), out=buffer)
                masked[id(a)] = buffer.reshape(-1, a.shape[-1])
            self._add(f"A/{name}", masked[id(a)])
            self._add(f"S/{name}", layer.output_grads.reshape(-1, layer.output_grads.shape[-1]))

    def _add(self, factor: str, x: torch.Tensor) -> None:
        for i, cut in enumerate(self.slices[factor]):
            add_gram_upper(self.sums[f"{factor}/{i}"], x[:, cut])

    @property
    def n_tokens(self) -> int:
        return int(self.sums["n_tokens"])

    @property
    def n_sequences(self) -> int:
        return int(self.sums["n_sequences"])

    def pop(self, name: str) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Layer ``name``'s diagonal blocks of A and of S in float64, each divided by the number of predicting
        tokens (one block each without the block-diagonal approximation); frees the sums."""
        n = float(self.sums["n_tokens"])
        return tuple([symmetric_from_upper(self.sums.pop(f"{factor}/{name}/{i}").double()) / n
                      for i in range(len(self.slices[f"{factor}/{name}"]))] for factor in ("A", "S"))
