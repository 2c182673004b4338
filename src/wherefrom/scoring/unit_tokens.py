"""Per-token influence through units, for a few sequences: the token heatmaps of the "which neurons" view.

A unit's influence on a sequence splits over the sequence's positions like the layer's does (eq. 31): the
product of :func:`wherefrom.scoring.units.token_products`, summed over the unit's rows or columns only.
"""

from __future__ import annotations

import torch

from wherefrom.engine.passes import SummedTensors
from wherefrom.engine.stream import LayerBatch, StreamBatch
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

    def update(self, item: StreamBatch) -> None:
        batch_rows = item.batch.rows
        for q, units in enumerate(self.unit_maps):
            match = self.rows[q].unsqueeze(1) == batch_rows.unsqueeze(0)  # [M, B]
            slots, batch_index = match.nonzero(as_tuple=True)
            if not len(slots):
                continue
            for name, part in units.layers.items():
                layer = item.layers[name]
                picked = LayerBatch(layer.inputs[batch_index], layer.output_grads[batch_index])
                (product,) = token_products(self.queries[name][q:q + 1], picked, part.axis)  # [1, b, T, D]
                out = torch.zeros(*product.shape[1:3], len(units), dtype=torch.float64)
                terms = to_units(product[0].double(), part.assignment, out).transpose(1, 2)  # [b, K, T]
                # Position t's activity predicts token t+1: shown on the predicted token, as per-token scores are.
                length = min(terms.shape[-1], self.sums["tokens"].shape[-1]) - 1
                self.sums["tokens"][q, slots, :len(units), 1:length + 1] += terms[..., :length]
