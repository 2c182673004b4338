"""The small samples the solvers work on: a seeded subset of corpus sequences, gradients and scores on it."""

from __future__ import annotations

import torch
from torch import nn

from wherefrom.data.corpus import TrainingSequence
from wherefrom.data.queries import Query
from wherefrom.engine.execution import Execution
from wherefrom.engine.passes import Checkpoints, PassPlan, run_pass
from wherefrom.engine.stream import Labels
from wherefrom.models.selection import TrackedLayer
from wherefrom.scoring.contract import ScoreAccumulator
from wherefrom.scoring.query_gradients import query_gradients
from wherefrom.solvers.iterative import solver_dtype
from wherefrom.solvers.layout import Layout


def sample_sequences(sequences: list[TrainingSequence], n: int, seed: int = 0) -> list[TrainingSequence]:
    """``n`` sequences drawn without replacement (all of them when there are fewer), in corpus order."""
    if n >= len(sequences):
        return list(sequences)
    rows = torch.randperm(len(sequences), generator=torch.Generator().manual_seed(seed))[:n].sort().values
    return [sequences[int(r)] for r in rows]


def as_queries(sequences: list[TrainingSequence]) -> list[Query]:
    """Sequences as queries measuring their own log-probability after the first token (∇ = the training gradient)."""
    return [Query(s.record_id, "", "", tuple(s.input_ids[:1]), tuple(s.input_ids[1:])) for s in sequences]


def flat_gradients(model: nn.Module, layers: list[TrackedLayer], queries: list[Query], batch_size: int,
                   quiet: bool = False) -> torch.Tensor:
    """Each query's ∇L_q over all tracked layers as one flat row [Q, P] (see :class:`Layout`), summed over positions
    in float32 whatever the model's dtype (the solvers' precision, ``solvers/iterative.py``)."""
    gradients = query_gradients(model, layers, queries, batch_size, quiet)
    dtype = solver_dtype(Execution.of(model).dtype)
    return Layout.of(layers).join({layer.name: gradients.dense(layer.name, dtype) for layer in layers})


def scores_on(model: nn.Module, layers: list[TrackedLayer], V: torch.Tensor, sequences: list[TrainingSequence],
              batch_size: int, quiet: bool = False) -> torch.Tensor:
    """Influence ⟨V_q, ∇L_z⟩ of each sequence z on each query q, for preconditioned queries V [Q, P]: [Q, Z]."""
    queries = Layout.of(layers).split(V)
    plan = PassPlan([s.input_ids for s in sequences], [1] * len(sequences), batch_size, max(1, len(sequences)))
    execution = Execution.of(model)
    accumulator = run_pass(model, layers, plan, Labels("data"), "sample", "scoring the sample",
                           lambda: ScoreAccumulator(queries, V.shape[0], len(sequences), False, None, None, execution),
                           Checkpoints(None, ""), execution, quiet)
    return accumulator.scores.sum(0)

