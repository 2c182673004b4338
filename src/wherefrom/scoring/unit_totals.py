"""What a scoring pass keeps of the unit split (see :mod:`wherefrom.scoring.units`), in one pass over the corpus.

- ``positive`` [Q, U]: each unit's influence summed over the sequences whose total influence on the query is
  positive, Σ_{z: I(z) > 0} I_u(z): which units carry the influence of the training data that supports the
  completion (the corpus-wide sum would cancel: at a minimum of the training loss Σ_z ∇L(z) ≈ 0).
- for each query, its ``keep`` best sequences seen so far with their split over every unit, so the top
  sequences' splits come out of the same pass. Kept per rank and combined at the end.
"""

from __future__ import annotations

import torch

from wherefrom.engine.distributed import World


class UnitTotals:
    """Folds each batch's per-sequence unit split [Q, B, U] into the positive sums and the top-sequence buffer."""

    def __init__(self, n_queries: int, n_units: int, keep: int, world: World) -> None:
        self.positive = torch.zeros(n_queries, n_units, dtype=torch.float64)
        self.keep = keep
        self.rows = torch.full((n_queries, keep), -1, dtype=torch.long)
        self.scores = torch.full((n_queries, keep), -torch.inf, dtype=torch.float64)
        self.split = torch.zeros(n_queries, keep, n_units)
        self.world = world

    def add(self, rows: torch.Tensor, scores: torch.Tensor, split: torch.Tensor) -> None:
        """One batch: sequence ``rows`` [B], their total scores [Q, B] and unit splits [Q, B, U]."""
        split = split.double()
        self.positive += (split * (scores > 0).unsqueeze(-1)).sum(1)
        self._keep_best(rows.expand(scores.shape[0], -1), scores.double(), split.float())

    def _keep_best(self, rows: torch.Tensor, scores: torch.Tensor, split: torch.Tensor) -> None:
        all_rows = torch.cat([self.rows, rows], 1)
        all_scores = torch.cat([self.scores, scores], 1)
        all_split = torch.cat([self.split, split], 1)
        best = torch.topk(all_scores, self.keep, dim=1).indices
        self.rows = all_rows.gather(1, best)
        self.scores = all_scores.gather(1, best)
        self.split = all_split.gather(1, best.unsqueeze(-1).expand(-1, -1, all_split.shape[-1]))

    def state(self) -> dict[str, torch.Tensor]:
        return {"unit_positive": self.positive, "unit_rows": self.rows, "unit_scores": self.scores,
                "unit_split": self.split}

    def merge(self, state: dict[str, torch.Tensor]) -> None:
        self.positive += state["unit_positive"]
        self._keep_best(state["unit_rows"], state["unit_scores"], state["unit_split"])

    def totals(self) -> dict[str, torch.Tensor]:
        """Additive form for the sum over ranks: positive sums, and each rank's buffer in its own slot."""
        self._slots = {"unit_positive": self.positive}
        if self.world.size > 1:
            for key, value in (("rows", self.rows + 1), ("scores", self.scores.nan_to_num(neginf=0.0)),
                               ("split", self.split)):
                slots = value.new_zeros(self.world.size, *value.shape)
                slots[self.world.rank] = value
                self._slots[f"unit_{key}_slots"] = slots
        return self._slots

    def gather(self) -> None:
        """After the sum over ranks: every rank's buffer merged into this one (a no-op for one process)."""
        if self.world.size == 1:
            return
        rows = self._slots["unit_rows_slots"] - 1
        scores = self._slots["unit_scores_slots"].masked_fill(rows < 0, -torch.inf)
        for rank in range(self.world.size):
            if rank != self.world.rank:
                self._keep_best(rows[rank], scores[rank], self._slots["unit_split_slots"][rank])
