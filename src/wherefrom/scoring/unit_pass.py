"""The unit view of a finished scoring pass (`score --per-unit`): each query's top units and top sequences' split,
and, with per-token scores, the units' token maps from a second pass over only the top sequences."""

from __future__ import annotations

import torch
from torch import nn

from wherefrom.data.corpus import TrainingSequence
from wherefrom.engine.execution import Execution
from wherefrom.engine.passes import Checkpoints, PassPlan, run_pass
from wherefrom.engine.stream import Labels
from wherefrom.models.selection import TrackedLayer
from wherefrom.models.units import UnitMap
from wherefrom.options import ScoreOptions
from wherefrom.scoring.contract import ScoreAccumulator
from wherefrom.scoring.unit_results import UnitInfluence, summarise_units
from wherefrom.scoring.unit_tokens import UnitTokenAccumulator

MAPPED_SEQUENCES = 5  # per query, its best sequences get token maps per unit (a second pass over them)


def unit_summary(accumulator: ScoreAccumulator, units: UnitMap, options: ScoreOptions) -> UnitInfluence:
    """The per-unit view of a finished pass: each query's top ``options.per_unit`` units and top sequences' split."""
    totals = accumulator.unit_totals
    totals.gather()
    positive_total = accumulator.scores.sum(0).clamp(min=0).sum(1)
    return summarise_units(units.names, options.unit_view, totals.positive, positive_total, totals.rows,
                           totals.split, options.per_unit)


def unit_token_maps(model: nn.Module, layers: list[TrackedLayer], queries_V: dict[str, torch.Tensor],
                    summary: UnitInfluence, units: UnitMap, sequences: list[TrainingSequence], options: ScoreOptions,
                    checkpoints: Checkpoints, execution: Execution, quiet: bool) -> torch.Tensor:
    """Per-token influence of each query's best ``MAPPED_SEQUENCES`` sequences through its top units: a second pass
    over only those sequences (at most queries × MAPPED_SEQUENCES of them): [Q, M', K, T]."""
    mapped = summary.rows[:, :MAPPED_SEQUENCES]
    rows = sorted(set(mapped.flatten().tolist()) - {-1})
    position = {name: i for i, name in enumerate(units.names)}
    unit_maps = [units.subset([position[summary.names[i]] for i in ids]) for ids in summary.ids.tolist()]
    width = max(len(sequences[r].input_ids) for r in rows)
    plan = PassPlan([sequences[r].input_ids for r in rows], [1] * len(rows), options.batch_size, options.shard_size)
    local = torch.tensor(rows)
    local_rows = torch.searchsorted(local, mapped.clamp(min=0)).masked_fill(mapped < 0, -1)
    tracked = [layer for layer in layers if any(layer.name in m.layers for m in unit_maps)]
    accumulator = run_pass(model, tracked, plan, Labels("data"), "unit-tokens", "unit token maps",
                           lambda: UnitTokenAccumulator(queries_V, local_rows, unit_maps, width),
                           checkpoints, execution, quiet)
    return accumulator.sums["tokens"].float()
