"""Bytes from shapes: model weights, per-batch captures, factor sums, bases, eigendecomposition work, output files.

Every count mirrors what the passes allocate (see curvature/ and scoring/): captures in the model's dtype, sums and
bases in float32 (the precision policy), eigendecompositions in float64, score accumulators in float64, saved
scores in float32.
"""

from __future__ import annotations

import json

import torch
from torch import nn

from wherefrom.curvature.blocks import block_sizes, factor_sum_bytes

__all__ = ["factor_sum_bytes"]  # with the byte counts below (it lives with the blocks it counts)
from wherefrom.models.selection import TrackedLayer

_SAFETENSORS_DTYPES = {torch.float64: "F64", torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
                       torch.int64: "I64"}
_EIGH_COPIES = 4  # float64 [d, d] live in eigendecompose: the factor, its symmetrised copy, eigenvectors, LAPACK work


def itemsize(dtype: torch.dtype) -> int:
    return torch.empty((), dtype=dtype).element_size()


def weights_bytes(model: nn.Module) -> int:
    """Parameters and buffers of the model."""
    return sum(t.numel() * t.element_size() for t in [*model.parameters(), *model.buffers()])


def captured_bytes(layers: list[TrackedLayer], batch_size: int, length: int, dtype: torch.dtype) -> int:
    """ā and Ds of every tracked layer for one batch (an upper bound: layers reading one input share its ā)."""
    return batch_size * length * sum(layer.shape.in_dim + layer.shape.out_features for layer in layers) * itemsize(dtype)


def eigenvalue_bytes(layers: list[TrackedLayer], dtype: torch.dtype) -> int:
    """Λ [out, in(+1)] of every layer."""
    return sum(layer.shape.out_features * layer.shape.in_dim for layer in layers) * itemsize(dtype)


def largest_block(layers: list[TrackedLayer], blocks: int) -> int:
    """The widest diagonal block of any factor: the largest eigendecomposition."""
    return max(block_sizes(dim, blocks)[0] for layer in layers for dim in (layer.shape.in_dim, layer.shape.out_features))


def eigen_work_bytes(layers: list[TrackedLayer], blocks: int, at_once: int) -> int:
    """float64 working memory of ``at_once`` of the largest eigendecompositions (the CPU runs one per thread,
    curvature/eigen.py), with one more factor read ahead."""
    return (_EIGH_COPIES * at_once + 1) * largest_block(layers, blocks) ** 2 * 8


def per_sequence_gradient_bytes(layers: list[TrackedLayer], batch_size: int, dtype: torch.dtype) -> int:
    """The largest layer's [B, out, in] scratch of per-sequence gradients (correction pass, scoring)."""
    return batch_size * max(layer.shape.out_features * layer.shape.in_dim for layer in layers) * itemsize(dtype)


def factor_file_shapes(layers: list[TrackedLayer], strategy: str, blocks: int, dtype: torch.dtype
                       ) -> dict[str, tuple[tuple[int, ...], torch.dtype]]:
    """The tensors `wherefrom fit` writes into factors.safetensors, by name (see curvature/store.py)."""
    shapes: dict[str, tuple[tuple[int, ...], torch.dtype]] = {}
    for layer in layers:
        if strategy in ("kfac", "ekfac"):
            for part, dim in (("Q_A", layer.shape.in_dim), ("Q_S", layer.shape.out_features)):
                sizes = block_sizes(dim, blocks)
                for i, size in enumerate(sizes):
                    shapes[f"{layer.name}/{part}" if len(sizes) == 1 else f"{layer.name}/{part}/{i}"] = ((size, size),
                                                                                                        dtype)
        if strategy != "identity":
            shapes[f"{layer.name}/eigenvalues"] = ((layer.shape.out_features, layer.shape.in_dim), dtype)
    return shapes


def safetensors_bytes(shapes: dict[str, tuple[tuple[int, ...], torch.dtype]]) -> int:
    """Size of a safetensors file holding these tensors: 8-byte length, JSON header padded to 8, the data."""
    header, offset = {}, 0
    for name, (shape, dtype) in sorted(shapes.items()):
        size = itemsize(dtype)
        for n in shape:
            size *= n
        header[name] = {"dtype": _SAFETENSORS_DTYPES[dtype], "shape": list(shape), "data_offsets": [offset, offset + size]}
        offset += size
    text = json.dumps(header, separators=(",", ":"))
    return 8 + -(-len(text) // 8) * 8 + offset


def unit_file_shapes(n_queries: int, k: int, top_k: int, mapped: int, longest: int, per_token: bool
                     ) -> dict[str, tuple[tuple[int, ...], torch.dtype]]:
    """The ``unit_*`` tensors of `score --per-unit k` (see scoring/unit_results.py)."""
    shapes = {"unit_ids": ((n_queries, k), torch.int64), "unit_influence": ((n_queries, k), torch.float32),
              "unit_positive": ((n_queries,), torch.float32), "unit_concentration": ((n_queries,), torch.int64),
              "unit_rows": ((n_queries, top_k), torch.int64), "unit_split": ((n_queries, top_k, k), torch.float32)}
    if per_token:
        shapes["unit_tokens"] = ((n_queries, mapped, k, longest), torch.float32)
    return shapes


def score_file_shapes(n_queries: int, n_sequences: int, n_tokens: int, n_layers: int, per_layer: bool,
                      per_token: bool, self_influence: bool) -> dict[str, tuple[tuple[int, ...], torch.dtype]]:
    """The tensors `wherefrom score` writes into scores.safetensors (float32; see scoring/results.py)."""
    shapes = {"scores": ((n_queries, n_sequences), torch.float32)}
    if per_layer:
        shapes["per_layer"] = ((n_layers, n_queries, n_sequences), torch.float32)
    if per_token:
        shapes["per_token"] = ((n_queries, n_tokens), torch.float32)
        shapes["token_offsets"] = ((n_sequences + 1,), torch.int64)
    if self_influence:
        shapes["self_influence"] = ((n_sequences,), torch.float32)
    return shapes
