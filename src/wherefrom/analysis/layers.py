"""Where in the network influence comes from (Grosse et al. 2023, sec. 5.3): contiguous blocks of layers.

Tracked modules are grouped by the transformer layer they sit in, read from their names
(``model.layers.12.mlp.up_proj`` -> 12, ``transformer.h.3.mlp.c_fc`` -> 3: the first all-digit component).
Blocks are contiguous runs of transformer layers, so every module of one transformer layer lands in the same
block. Scores restricted to a block are the sums of the per-layer scores of its modules (per_layer sums to scores).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from wherefrom.analysis._arrays import as_numpy

_LAYER_INDEX = re.compile(r"(?:^|\.)(\d+)(?:\.|$)")
THIRDS = ("lower", "middle", "upper")


@dataclass(frozen=True)
class LayerBlock:
    """A contiguous run of transformer layers and the tracked modules inside it."""

    name: str
    first_layer: int  # transformer-layer index of the block's first layer
    last_layer: int  # transformer-layer index of its last layer (inclusive)
    members: tuple[int, ...]  # positions in layer_names (the first axis of per_layer) of its modules


@dataclass(frozen=True)
class LayerHeatmap:
    """Block x sequence influence of one query's top sequences, columns ordered by centre of mass (lowest first)."""

    blocks: tuple[LayerBlock, ...]
    rows: np.ndarray  # [k] corpus rows, in column order
    matrix: np.ndarray  # [n_blocks, k] influence of each block on each sequence's score
    centre_of_mass: np.ndarray  # [k] block-index centre of mass of each column's |influence|


def transformer_layer(name: str) -> int:
    """Index of the transformer layer a tracked module belongs to: the first all-digit component of its name."""
    match = _LAYER_INDEX.search(name)
    if match is None:
        raise ValueError(
            f"cannot tell which transformer layer {name!r} belongs to: its dotted name has no numeric component "
            "(expected names like 'model.layers.12.mlp.up_proj' or 'transformer.h.3.mlp.c_fc')"
        )
    return int(match.group(1))


def layer_blocks(layer_names: Sequence[str], n: int) -> list[LayerBlock]:
    """Split the transformer layers of ``layer_names`` into ``n`` contiguous blocks of near-equal size (the
    first blocks take one layer more when the count does not divide evenly)."""
    indices = np.array([transformer_layer(name) for name in layer_names])
    distinct = np.unique(indices)
    if not 1 <= n <= distinct.size:
        raise ValueError(
            f"cannot split {distinct.size} transformer layers into {n} blocks; choose 1 <= n <= {distinct.size}"
        )
    blocks = []
    for group in np.array_split(distinct, n):
        first, last = int(group[0]), int(group[-1])
        members = tuple(int(i) for i in np.flatnonzero(np.isin(indices, group)))
        blocks.append(LayerBlock(name=f"layers {first}-{last}", first_layer=first, last_layer=last, members=members))
    return blocks


def thirds(layer_names: Sequence[str]) -> dict[str, LayerBlock]:
    """The lower, middle and upper thirds of the network as blocks, keyed by those names."""
    blocks = layer_blocks(layer_names, len(THIRDS))
    return {
        name: LayerBlock(name=name, first_layer=b.first_layer, last_layer=b.last_layer, members=b.members)
        for name, b in zip(THIRDS, blocks, strict=True)
    }


def restricted_scores(per_layer: Any, block: LayerBlock) -> np.ndarray:
    """Scores computed with only the block's layers: sum of ``per_layer`` [n_layers, ...] over its members."""
    n_layers = per_layer.shape[0]
    if max(block.members) >= n_layers:
        raise ValueError(
            f"block {block.name!r} refers to layer position {max(block.members)} but per_layer has {n_layers} "
            "layers; build the blocks from the same result's layer_names"
        )
    return sum(as_numpy(per_layer[m]) for m in block.members)


def block_scores(per_layer: Any, blocks: Sequence[LayerBlock]) -> np.ndarray:
    """Scores restricted to each block, stacked: [n_blocks, ...] from ``per_layer`` [n_layers, ...]."""
    return np.stack([restricted_scores(per_layer, block) for block in blocks])


def centre_of_mass(block_matrix: Any) -> np.ndarray:
    """Per column of a [n_blocks, k] matrix, the block index (0-based) at the centre of mass of |values|; NaN for
    an all-zero column."""
    weights = np.abs(as_numpy(block_matrix))
    total = weights.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0.0, np.arange(weights.shape[0]) @ weights / total, np.nan)


def layer_heatmap(per_layer: Any, blocks: Sequence[LayerBlock], query: int, rows: Sequence[int]) -> LayerHeatmap:
    """The paper's layer heatmap for ``query``: block influence on each of ``rows`` (e.g. its top sequences),
    columns sorted by centre of mass so that sequences drawing on lower layers come first."""
    columns = np.asarray(rows, dtype=np.int64)
    if columns.ndim != 1 or columns.size == 0:
        raise ValueError("rows must be a non-empty 1-D list of corpus rows (e.g. result.top(query, k))")
    matrix = block_scores(per_layer[:, query][:, columns.tolist()], blocks)
    centres = centre_of_mass(matrix)
    order = np.argsort(centres, kind="stable")
    return LayerHeatmap(
        blocks=tuple(blocks), rows=columns[order], matrix=matrix[:, order], centre_of_mass=centres[order]
    )
