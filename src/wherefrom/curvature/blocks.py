"""The block-diagonal approximation within a layer (Grosse et al. appendix A, eq. 33).

With O blocks, A ≈ diag(A_1, …, A_O) and S ≈ diag(S_1, …, S_O): each factor's dimension is cut into O contiguous
blocks, covariances are summed only inside the blocks (memory M²/O + P²/O instead of M² + P²) and eigendecomposed
block by block, so the eigenbases are block-diagonal too: Q_A = diag(Q_A1, …, Q_AO), with the eigenvalues of the
blocks concatenated in the same order. A dimension that O does not divide gets blocks of ⌈d/O⌉ and ⌊d/O⌋ (the
larger first); a bias counts as the last input coordinate.

:class:`BlockDiagonal` multiplies like the dense [d, d] basis it stands for (``x @ Q``, ``Q @ V``, ``Q.T``,
``Q.to(dtype)``), so the preconditioner, the correction and scoring use either without knowing which.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from wherefrom.errors import WherefromError
from wherefrom.models.selection import TrackedLayer


def block_sizes(dim: int, blocks: int) -> list[int]:
    """Sizes of ``blocks`` contiguous blocks covering ``dim`` coordinates (they differ by at most one)."""
    small, larger = divmod(dim, blocks)
    return [small + 1] * larger + [small] * (blocks - larger)


def block_slices(dim: int, blocks: int) -> list[slice]:
    """The coordinates of each of ``blocks`` blocks covering ``dim``."""
    return _slices(block_sizes(dim, blocks))


def _slices(sizes: list[int]) -> list[slice]:
    bounds = [0]
    for size in sizes:
        bounds.append(bounds[-1] + size)
    return [slice(lo, hi) for lo, hi in zip(bounds, bounds[1:])]


def factor_sum_bytes(layers: list[TrackedLayer], blocks: int, dtype: torch.dtype) -> int:
    """The covariance sums A and S of every layer, O diagonal blocks each (equal to the bases' size)."""
    return sum(block ** 2 for layer in layers for dim in (layer.shape.in_dim, layer.shape.out_features)
               for block in block_sizes(dim, blocks)) * torch.empty((), dtype=dtype).element_size()


def check_factor_blocks(layers: list[TrackedLayer], blocks: int) -> None:
    """Refuse a block count below 1 or above a tracked layer's input or output width (an empty block)."""
    if blocks < 1:
        raise WherefromError(f"--factor-blocks must be at least 1, got {blocks}.")
    narrow = [layer for layer in layers if min(layer.shape.in_dim, layer.shape.out_features) < blocks]
    if narrow:
        layer = narrow[0]
        raise WherefromError(
            f"--factor-blocks {blocks} is more than layer {layer.name} has inputs ({layer.shape.in_dim}) or outputs "
            f"({layer.shape.out_features}); use at most {min(layer.shape.in_dim, layer.shape.out_features)}."
        )


@dataclass(frozen=True)
class BlockDiagonal:
    """A square block-diagonal matrix diag(Q_1, …, Q_O), kept as its blocks."""

    blocks: tuple[torch.Tensor, ...]

    @property
    def shape(self) -> tuple[int, int]:
        dim = sum(block.shape[0] for block in self.blocks)
        return dim, dim

    @property
    def dtype(self) -> torch.dtype:
        return self.blocks[0].dtype

    @property
    def T(self) -> BlockDiagonal:  # noqa: N802 - mirrors torch.Tensor.T
        return BlockDiagonal(tuple(block.T for block in self.blocks))

    def to(self, *args: object, **kwargs: object) -> BlockDiagonal:
        """Each block moved or cast as ``torch.Tensor.to`` would."""
        return BlockDiagonal(tuple(block.to(*args, **kwargs) for block in self.blocks))

    def dense(self) -> torch.Tensor:
        """The full [d, d] matrix (for tests and small layers)."""
        return torch.block_diag(*self.blocks)

    def _slices(self) -> list[slice]:
        return _slices([block.shape[0] for block in self.blocks])

    def right_multiply(self, x: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        """x Q over the last dimension of x (its rows rotated into the eigenbasis), optionally into ``out``."""
        out = torch.empty_like(x) if out is None else out
        for block, cols in zip(self.blocks, self._slices()):
            out[..., cols] = x[..., cols] @ block
        return out

    def __rmatmul__(self, x: torch.Tensor) -> torch.Tensor:
        return self.right_multiply(x)

    def __matmul__(self, V: torch.Tensor) -> torch.Tensor:
        """Q V over the second-to-last dimension of V."""
        out = torch.empty_like(V)
        for block, rows in zip(self.blocks, self._slices()):
            out[..., rows, :] = block @ V[..., rows, :]
        return out


Basis = torch.Tensor | BlockDiagonal


def rotate(x: torch.Tensor, Q: Basis, out: torch.Tensor | None = None) -> torch.Tensor:
    """x Q over the last dimension, written into ``out`` when given (a reused scratch tensor)."""
    if isinstance(Q, BlockDiagonal):
        return Q.right_multiply(x, out)
    return torch.matmul(x, Q, out=out)


def basis_tensors(Q: Basis) -> list[torch.Tensor]:
    """The tensors holding a basis: the matrix itself, or its blocks in order."""
    return list(Q.blocks) if isinstance(Q, BlockDiagonal) else [Q]


def basis_from_tensors(tensors: list[torch.Tensor]) -> Basis:
    """Inverse of :func:`basis_tensors`: one tensor is a dense basis, several are the blocks of one."""
    return tensors[0] if len(tensors) == 1 else BlockDiagonal(tuple(tensors))
