"""Which units carry each query's influence (`score --per-unit K`): the summary kept in a score folder.

In ``scores.safetensors`` (Q queries, K units per query, M = top-k sequences per query, T tokens):
``unit_ids`` [Q, K] (positions in the manifest's ``unit_names``), ``unit_influence`` [Q, K], ``unit_positive``
[Q], ``unit_concentration`` [Q], ``unit_rows`` [Q, M], ``unit_split`` [Q, M, K] and, with per-token scores,
``unit_tokens`` [Q, M', K, T] for the first M' ≤ 5 of the M sequences.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

KEYS = ("unit_ids", "unit_influence", "unit_positive", "unit_concentration", "unit_rows", "unit_split", "unit_tokens")


@dataclass
class UnitInfluence:
    """Per query: its K units with the most influence, how concentrated it is, and its top sequences' split.

    ``influence[q, k]`` is unit ``names[ids[q, k]]``'s influence summed over the sequences whose total influence
    on query q is positive; ``positive[q]`` is the total of those sequences (so ``influence / positive`` is the
    unit's share; shares of all units and the part in no unit, such as an output bias, sum to 1).
    ``concentration[q]`` is how many units, largest first, carry half of ``positive[q]`` (-1: none do).
    ``split[q, m, k]`` is sequence ``rows[q, m]``'s influence through unit ``ids[q, k]`` (rows best first by total
    score); ``tokens[q, m, k, j]`` splits it over the sequence's tokens, shown on the predicted token j, for the
    first few m (``tokens.shape[1]``; a second pass over those sequences makes them).
    """

    names: list[str]
    view: str
    n_units: int
    ids: torch.Tensor
    influence: torch.Tensor
    positive: torch.Tensor
    concentration: torch.Tensor
    rows: torch.Tensor
    split: torch.Tensor
    tokens: torch.Tensor | None = None

    def shares(self, query: int) -> torch.Tensor:
        """Each of the query's top units' share of its positive influence."""
        total = float(self.positive[query])
        return self.influence[query] / total if total else torch.zeros_like(self.influence[query])

    def tensors(self) -> dict[str, torch.Tensor]:
        values = {"unit_ids": self.ids, "unit_influence": self.influence, "unit_positive": self.positive,
                  "unit_concentration": self.concentration, "unit_rows": self.rows, "unit_split": self.split,
                  "unit_tokens": self.tokens}
        return {k: v for k, v in values.items() if v is not None}

    def manifest(self) -> dict[str, Any]:
        return {"unit_names": self.names, "unit_view": self.view, "n_units": self.n_units}

    @classmethod
    def load(cls, tensors: dict[str, torch.Tensor], manifest: dict[str, Any]) -> UnitInfluence | None:
        """From a score folder's tensors and manifest (the manifest's unit entries are taken out of it)."""
        if "unit_ids" not in tensors:
            return None
        return cls(manifest.pop("unit_names"), manifest.pop("unit_view"), manifest.pop("n_units"),
                   *(tensors[k] for k in KEYS[:-1]), tokens=tensors.get("unit_tokens"))

    def summary(self, query: int) -> dict[str, Any]:
        """The query's units for results.jsonl: name, influence and share, and the concentration."""
        shares = self.shares(query).tolist()
        units = [{"unit": self.names[i], "influence": float(v), "share": s}
                 for i, v, s in zip(self.ids[query].tolist(), self.influence[query].tolist(), shares)]
        concentration = int(self.concentration[query])
        return {"units": units, "unit_concentration": None if concentration < 0 else concentration,
                "units_total": self.n_units, "units_positive_influence": float(self.positive[query])}

    def sequence_split(self, query: int, row: int) -> dict[str, float] | None:
        """A top sequence's influence through each of the query's top units (None if it is not in the top)."""
        where = (self.rows[query] == row).nonzero().flatten()
        if not len(where):
            return None
        names = [self.names[i] for i in self.ids[query].tolist()]
        return dict(zip(names, self.split[query, int(where[0])].tolist()))


def summarise_units(names: list[str], view: str, positive_by_unit: torch.Tensor, positive_total: torch.Tensor,
                    rows: torch.Tensor, split: torch.Tensor, k: int) -> UnitInfluence:
    """The top-``k`` units by |influence| per query, the concentration, and the top sequences' split over them.

    ``positive_by_unit`` [Q, U] and ``split`` [Q, M, U] cover every unit; ``rows`` [Q, M] are the top sequences.
    """
    k = min(k, positive_by_unit.shape[1])
    top = torch.topk(positive_by_unit.abs(), k, dim=1).indices  # [Q, K]
    distinct = sorted(set(top.flatten().tolist()))
    position = {u: i for i, u in enumerate(distinct)}
    ids = torch.tensor([[position[u] for u in row] for row in top.tolist()], dtype=torch.long).reshape(top.shape)
    return UnitInfluence(
        names=[names[u] for u in distinct], view=view, n_units=len(names), ids=ids,
        influence=positive_by_unit.gather(1, top).float(), positive=positive_total.float(),
        concentration=concentration(positive_by_unit, positive_total), rows=rows,
        split=split.gather(2, top.unsqueeze(1).expand(-1, split.shape[1], -1)).float(),
    )


def concentration(positive_by_unit: torch.Tensor, positive_total: torch.Tensor) -> torch.Tensor:
    """Per query, how many units (largest influence first) carry half of its positive influence; -1 if no
    number of them does (the units' positive parts add up to less than half)."""
    cumulative = positive_by_unit.sort(dim=1, descending=True).values.cumsum(1)
    reached = cumulative >= positive_total.unsqueeze(1) / 2
    first = reached.float().argmax(1) + 1
    return torch.where(reached.any(1) & (positive_total > 0), first, torch.full_like(first, -1))
