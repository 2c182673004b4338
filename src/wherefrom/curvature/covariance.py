"""K-FAC covariances A = E[ā āᵀ] and S = E[Ds Dsᵀ] over predicting tokens (Grosse et al. eq. 16-17).

A predicting token is a position whose output predicts a target (every token but a sequence's last): the last
position's Ds is exactly zero, so counting its ā āᵀ in A would bias K-FAC's Kronecker product by about 1/T.
A is summed from ā during the forward pass, S from Ds as the backward pass reaches each layer, so the pass
holds no layer's activity longer than its own sum needs it.

Precision policy: ā and Ds arrive in the model's dtype; A and S are summed in float32 whatever that dtype is
(the execution's accumulation dtype; bf16 sums break the eigenvectors), each batch's ā or Ds cast to float32
first. Their float32 round-off, ~1e-7·√batches, is far below the sampling noise; float64 starts at the
eigendecomposition, where it is needed. With the factor sums in host memory (``--factors host``), each batch's
ā āᵀ and Ds Dsᵀ are formed on the device and added to the host's float32 sums. With ``blocks`` > 1 only the
diagonal blocks of A and S are summed (the block-diagonal approximation of appendix A, see `curvature/blocks.py`).
"""

from __future__ import annotations

from functools import cache

import torch

from wherefrom.allocator import Workspace
from wherefrom.curvature.blocks import block_slices
from wherefrom.data.batching import Batch
from wherefrom.engine.execution import Execution
from wherefrom.engine.passes import SummedTensors
from wherefrom.engine.stream import LayerBatch
from wherefrom.models.selection import TrackedLayer

_GRAM_BAND = 384  # columns per band of add_gram_upper: products of at least [n, 384] x [n, 384] keep BLAS efficient


def add_gram_upper(total: torch.Tensor, x: torch.Tensor) -> None:
    """total += xᵀx for x [n, d], in place, on torch's own threads, in at least the upper triangle.

    Band by band of rows (k = d // 384 bands, at least one), each from the diagonal rightwards: (k + 1)/2k of a
    full product, 5/8 for d = 1536. Not BLAS syrk through scipy (half the arithmetic): its OpenBLAS threads and torch's OpenMP
    threads, each pool busy-waiting between calls, took turns on the cores, and the covariance pass of
    SmolLM2-135M took 64 s against 31 s with full products (2 cores; benchmarks/results/profile-fit.md).
    """
    d = x.shape[1]
    bands = max(1, d // _GRAM_BAND)
    for start in range(0, d, -(-d // bands)):
        stop = min(start + -(-d // bands), d)
        total[start:stop, start:].addmm_(x[:, start:stop].T, x[:, start:])


@cache
def _upper_positions(dim: int, device: torch.device) -> torch.Tensor:
    """Flat positions of a [dim, dim] matrix's upper triangle, diagonal included, row by row."""
    rows, columns = torch.triu_indices(dim, dim, device=device)
    return rows * dim + columns


def pack_upper(matrix: torch.Tensor) -> torch.Tensor:
    """The upper triangle of a square matrix, row by row: half the bytes of a covariance sum's checkpoint."""
    return matrix.reshape(-1).take(_upper_positions(matrix.shape[0], matrix.device))


def add_packed_upper(total: torch.Tensor, packed: torch.Tensor) -> None:
    """total's upper triangle += what :func:`pack_upper` packed; a whole square (a shard of an earlier version,
    which saved the square with nothing summed below the diagonal) is added as it is."""
    packed = packed.to(total.device)
    if packed.shape == total.shape:
        total += packed
    else:
        total.view(-1).index_add_(0, _upper_positions(total.shape[0], total.device), packed)


class CovarianceAccumulator(SummedTensors):
    """Sums ā āᵀ (forward pass) and Ds Dsᵀ (backward pass) per layer (their upper triangles read back), in ``blocks`` diagonal
    blocks, in the execution's accumulation dtype, on its factor device."""

    inputs_in_forward = True

    def __init__(self, layers: list[TrackedLayer], execution: Execution, blocks: int = 1) -> None:
        device, dtype = execution.factor_device, execution.accumulation_dtype
        self.sums: dict[str, torch.Tensor] = {"n_tokens": torch.zeros((), dtype=torch.float64, device=device),
                                              "n_sequences": torch.zeros((), dtype=torch.float64, device=device)}
        self.slices: dict[str, list[slice]] = {}
        for layer in layers:
            for factor, dim in (("A", layer.shape.in_dim), ("S", layer.shape.out_features)):
                self.slices[f"{factor}/{layer.name}"] = block_slices(dim, blocks)
                for i, cut in enumerate(self.slices[f"{factor}/{layer.name}"]):
                    size = cut.stop - cut.start
                    self.sums[f"{factor}/{layer.name}/{i}"] = torch.zeros(size, size, dtype=dtype, device=device)
        self.layers = layers
        self.routed = {layer.name for layer in layers if layer.expert is not None}  # ā, Ds zero at unrouted tokens
        self.dtype, self.on_host = dtype, execution.factors_on_host
        self.workspace = Workspace(execution.device)
        self.names = [layer.name for layer in layers]
        self._predicting: torch.Tensor | None = None
        self._masked: tuple[torch.Tensor, torch.Tensor] | None = None  # the last ā and its masked rows

    def begin(self, batch: Batch) -> None:
        """Count the batch; only predicting tokens count (Ds is zero elsewhere, ā is masked in :meth:`inputs`)."""
        predicting = torch.zeros_like(batch.target_mask)
        predicting[:, :-1] = batch.target_mask[:, 1:]
        self.sums["n_tokens"] += predicting.sum().to(self.sums["n_tokens"].device)
        self.sums["n_sequences"] += batch.rows.numel()
        self._predicting, self._masked = predicting.unsqueeze(-1), None

    def inputs(self, name: str, inputs: torch.Tensor) -> None:
        """Add ā āᵀ over predicting tokens; layers reading the same ā (gate_proj, up_proj) mask it once."""
        if self._masked is None or self._masked[0] is not inputs:
            buffer = self.workspace.get("masked", inputs.shape, inputs.dtype)
            torch.mul(inputs, self._predicting.to(inputs.dtype), out=buffer)
            self._masked = (inputs, buffer.reshape(-1, inputs.shape[-1]))
        self._add(f"A/{name}", self._routed_rows(name, self._masked[1]))

    def layer(self, name: str, layer: LayerBatch) -> None:
        """Add Ds Dsᵀ."""
        self._add(f"S/{name}", self._routed_rows(name, layer.output_grads.reshape(-1, layer.output_grads.shape[-1])))

    def _routed_rows(self, name: str, x: torch.Tensor) -> torch.Tensor:
        """An expert's rows at the tokens routed to it (the others are zero and add nothing to x xᵀ): an expert's
        sums cost its share of the tokens, k/E of them with top-k routing."""
        return x[x.ne(0).any(dim=1)] if name in self.routed else x

    def end(self, loss: torch.Tensor) -> None:
        self._predicting, self._masked = None, None

    def _add(self, factor: str, x: torch.Tensor) -> None:
        x = x.to(self.dtype)  # the policy: sums in float32 (a no-op for a float32 model)
        for i, cut in enumerate(self.slices[factor]):
            total = self.sums[f"{factor}/{i}"]
            if self.on_host:  # this batch's block formed on the device, added to the host's sum
                total += (x[:, cut].T @ x[:, cut]).to(total.device)
            else:
                add_gram_upper(total, x[:, cut])

    def state(self) -> dict[str, torch.Tensor]:
        """The sums with each square packed to its upper triangle, the only part summed or read: the peer
        workload's checkpoint takes 0.49 GB instead of 0.97 GB (the whole squares took 3.4 s to write on a 2-core
        machine)."""
        return {key: pack_upper(total) if total.dim() == 2 else total for key, total in self.sums.items()}

    def merge(self, state: dict[str, torch.Tensor]) -> None:
        for key, value in state.items():
            total = self.sums[key]
            if total.dim() == 2:
                add_packed_upper(total, value)
            else:
                total += value.to(total.device)

    @property
    def n_tokens(self) -> int:
        return int(self.sums["n_tokens"])

    @property
    def n_sequences(self) -> int:
        return int(self.sums["n_sequences"])

    def pop(self, name: str) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Layer ``name``'s diagonal blocks of the sums Σ ā āᵀ and Σ Ds Dsᵀ, as summed (divide by :attr:`n_tokens`
        for A and S; one block each without the block-diagonal approximation); frees the sums. Only the upper
        triangles are read afterwards (shards written by earlier versions summed nothing below them)."""
        return tuple([self.sums.pop(f"{factor}/{name}/{i}") for i in range(len(self.slices[f"{factor}/{name}"]))]
                     for factor in ("A", "S"))

    def shared_inputs(self, names: list[str]) -> dict[str, str]:
        """Layer → the earlier of ``names`` whose A it equals, whose basis Q_A it reuses (gate_proj and up_proj
        read the same input); consecutive layers are compared, before any is popped."""
        def sums_of_A(name: str) -> list[torch.Tensor]:
            return [self.sums[f"A/{name}/{i}"] for i in range(len(self.slices[f"A/{name}"]))]

        shares: dict[str, str] = {}
        for previous, name in zip(names, names[1:]):
            first, second = sums_of_A(previous), sums_of_A(name)
            if len(first) == len(second) and all(a.shape == b.shape and torch.equal(a, b)
                                                 for a, b in zip(first, second)):
                shares[name] = shares.get(previous, previous)
        return shares
