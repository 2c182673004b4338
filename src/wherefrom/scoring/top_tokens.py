"""Per-token influence of each query's best sequences only (`--per-token-top`): a second pass over them.

The token terms Ds_tᵀ V_q ā_t (Grosse et al. eq. 31) cost about queries × tokens times the plain contraction
⟨V_q, Σ_t Ds_t ā_tᵀ⟩. Once the scores rank the corpus, each query's terms are formed on its own N best sequences
only: the pass streams the union of those sequences, and a query's terms cost N sequences' worth.
"""

from __future__ import annotations

import torch
from torch import nn

from wherefrom.data.batching import Batch
from wherefrom.data.corpus import TrainingSequence
from wherefrom.engine.execution import Execution
from wherefrom.engine.passes import Checkpoints, PassPlan, SummedTensors, run_pass
from wherefrom.engine.stream import Labels, LayerBatch
from wherefrom.models.selection import TrackedLayer
from wherefrom.options import ScoreOptions
from wherefrom.scoring.lowrank import LowRankQueries
from wherefrom.scoring.units import token_terms


class TopTokenAccumulator(SummedTensors):
    """For each query q, the per-token influence of the pass's rows ``rows[q]`` [N]: ``sums['tokens']`` [Q, N, T]
    in float64, each term shown on the token its position predicts (as the full per-token scores are)."""

    def __init__(self, queries: dict[str, torch.Tensor | LowRankQueries], rows: torch.Tensor, width: int) -> None:
        self.queries = {name: V.dense() if isinstance(V, LowRankQueries) else V for name, V in queries.items()}
        self.rows = rows
        self.sums = {"tokens": torch.zeros(*rows.shape, width, dtype=torch.float64)}

    def begin(self, batch: Batch) -> None:
        """Which of each query's rows are in the batch: (slots among its N, positions in the batch) per query."""
        self._matches = [(self.rows[q].unsqueeze(1) == batch.rows.unsqueeze(0)).nonzero(as_tuple=True)
                         for q in range(self.rows.shape[0])]

    def layer(self, name: str, layer: LayerBatch) -> None:
        V = self.queries[name]
        for q, (slots, positions) in enumerate(self._matches):
            if not len(slots):
                continue
            index = positions.to(layer.inputs.device)
            terms = token_terms(V[q:q + 1], LayerBatch(layer.inputs[index], layer.output_grads[index]))[0]  # [b, T]
            length = min(terms.shape[-1], self.sums["tokens"].shape[-1]) - 1
            self.sums["tokens"][q, slots, 1:length + 1] += terms[:, :length].double().cpu()


def top_token_scores(model: nn.Module, layers: list[TrackedLayer], queries_V: dict[str, torch.Tensor | LowRankQueries],
                     token_rows: torch.Tensor, sequences: list[TrainingSequence], offsets: torch.Tensor,
                     options: ScoreOptions, checkpoints: Checkpoints, execution: Execution, quiet: bool
                     ) -> torch.Tensor:
    """Per-token influence [Q, offsets[-1]] holding, for each query q, the terms of its sequences ``token_rows[q]``
    (columns of ``sequences``) and 0 elsewhere: one pass over the union of those sequences."""
    rows = sorted(set(token_rows.flatten().tolist()))
    local_rows = torch.searchsorted(torch.tensor(rows), token_rows)
    width = max(len(sequences[r].input_ids) for r in rows)
    plan = PassPlan([sequences[r].input_ids for r in rows], [1] * len(rows), options.batch_size, options.shard_size)
    accumulator = run_pass(model, layers, plan, Labels("data"), "top-tokens", "token shares of the top sequences",
                           lambda: TopTokenAccumulator(queries_V, local_rows, width), checkpoints, execution, quiet)
    tokens = accumulator.sums["tokens"]
    per_token = torch.zeros(token_rows.shape[0], int(offsets[-1]), dtype=execution.accumulation_dtype)
    for q, query_rows in enumerate(token_rows.tolist()):
        for slot, row in enumerate(query_rows):
            lo, hi = int(offsets[row]), int(offsets[row + 1])
            per_token[q, lo:hi] = tokens[q, slot, :hi - lo]
    return per_token
