"""Per-token influence through units, for a few sequences: the token heatmaps of the "which neurons" view.

A unit's influence on a sequence splits over the sequence's positions like the layer's does (eq. 31): the
product of :func:`wherefrom.scoring.units.token_products`, summed over the unit's rows or columns only.
"""

from __future__ import annotations

import torch

from wherefrom.data.batching import Batch
from wherefrom.engine.passes import SummedTensors
from wherefrom.engine.stream import LayerBatch
from wherefrom.models.units import UnitMap
from wherefrom.scoring.units import to_units, token_products


class UnitTokenAccumulator(SummedTensors):
    """For each query q: the per-token influence of its sequences ``rows[q]`` [M] through its units
    ``unit_maps[q]`` (K units each): ``sums['tokens']`` [Q, M, K, T], shown on the predicted token."""

    def __init__(self, queries: dict[str, torch.Tensor], rows: torch.Tensor, unit_maps: list[UnitMap],
                 width: int) -> None:
        self.queries, self.rows, self.unit_maps = queries, rows, unit_maps
        n_units = max(len(m) for m in unit_maps)
        self.sums = {"tokens": torch.zeros(rows.shape[0], rows.shape[1], n_units, width, dtype=torch.float64)}

    def begin(self, batch: Batch) -> None:
        """Which of each query's sequences are in the batch: (slots, batch positions) per query."""
        self._matches = [(self.rows[q].unsqueeze(1) == batch.rows.unsqueeze(0)).nonzero(as_tuple=True)  # [M, B]
                         for q in range(len(self.unit_maps))]

    def layer(self, name: str, layer: LayerBatch) -> None:
        for q, units in enumerate(self.unit_maps):
            slots, batch_index = self._matches[q]
            part = units.layers.get(name)
            if part is None or not len(slots):
                continue
            index = batch_index.to(layer.output_grads.device)
            picked = LayerBatch(layer.inputs[index], layer.output_grads[index])
            (product,) = token_products(self.queries[name][q:q + 1], picked, part.axis)  # [1, b, T, D]
            out = torch.zeros(*product.shape[1:3], len(units), dtype=torch.float64)
            terms = to_units(product[0].double().cpu(), part.assignment, out).transpose(1, 2)  # [b, K, T]
            # Position t's activity predicts token t+1: shown on the predicted token, as per-token scores are.
            length = min(terms.shape[-1], self.sums["tokens"].shape[-1]) - 1
            self.sums["tokens"][q, slots, :len(units), 1:length + 1] += terms[..., :length]
