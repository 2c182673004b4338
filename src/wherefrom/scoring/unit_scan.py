"""Influence through one unit: the scoring pass with every tracked layer cut down to the unit's rows or columns.

A unit's part of a layer is itself a layer (V restricted to the unit's rows or columns, ā or Ds to the matching
components), so its influence, per sequence, per layer and per token, is what the ordinary score accumulator
computes on the restricted layers: one pass over the corpus, with a contraction as small as the unit.
"""

from __future__ import annotations

import torch

from wherefrom.data.batching import Batch
from wherefrom.engine.passes import Accumulator
from wherefrom.engine.stream import LayerBatch
from wherefrom.models.units import Axis
from wherefrom.scoring.contract import ScoreAccumulator
from wherefrom.scoring.lowrank import LowRankQueries


def restrict_queries(queries: dict[str, torch.Tensor | LowRankQueries],
                     positions: dict[str, tuple[Axis, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Each preconditioned query gradient V cut to the unit's rows or columns (layers the unit skips are dropped)."""
    result = {}
    for name, (axis, where) in positions.items():
        V = queries[name]
        V = V.dense() if isinstance(V, LowRankQueries) else V
        result[name] = V[:, where] if axis == "row" else V[:, :, where]
    return result


def restrict_layer(layer: LayerBatch, axis: Axis, where: torch.Tensor) -> LayerBatch:
    """A layer's activity cut to a unit: the Ds components of its rows, or the ā components of its columns."""
    if axis == "row":
        return LayerBatch(layer.inputs, layer.output_grads[..., where])
    return LayerBatch(layer.inputs[..., where], layer.output_grads)


class UnitScanAccumulator(Accumulator):
    """A score accumulator fed the unit's part of every layer."""

    def __init__(self, inner: ScoreAccumulator, positions: dict[str, tuple[Axis, torch.Tensor]]) -> None:
        self.inner, self.positions = inner, positions

    def begin(self, batch: Batch) -> None:
        self.inner.begin(batch)

    def layer(self, name: str, layer: LayerBatch) -> None:
        if name in self.positions:
            self.inner.layer(name, restrict_layer(layer, *self.positions[name]))

    def end(self, loss: torch.Tensor) -> None:
        self.inner.end(loss)

    def state(self) -> dict[str, torch.Tensor]:
        return self.inner.state()

    def merge(self, state: dict[str, torch.Tensor]) -> None:
        self.inner.merge(state)

    def totals(self) -> dict[str, torch.Tensor]:
        return self.inner.totals()
