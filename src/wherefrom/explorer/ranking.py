"""Rank every training sequence for one query: with the gradient index (fast, approximate) or by exact EK-FAC
scoring of the whole corpus (slow, exact), then re-score the best candidates exactly, per token and per layer."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import torch

from wherefrom.data.queries import Query
from wherefrom.engine.distributed import World
from wherefrom.engine.passes import Checkpoints
from wherefrom.explorer.session import ExplorerSession
from wherefrom.index.answers import index_cosine
from wherefrom.models.selection import TrackedLayer
from wherefrom.outputs.unit_panel import SHOWN_UNITS
from wherefrom.scoring.cosine import query_self_influence
from wherefrom.scoring.query_gradients import query_gradients
from wherefrom.scoring.results import ScoreResult
from wherefrom.scoring.scorer import score

PROGRESS_SHARD = 128  # sequences between progress reports (and cancel checks) of an exact scan


@dataclass(frozen=True)
class ShardProgress(Checkpoints):
    """Keeps nothing on disk; after each finished shard tells ``report`` how many shards are done, which also
    lets a cancelled job stop between shards."""

    report: Callable[[int], None] = lambda done: None

    def save(self, name: str, world: World, state: dict[str, torch.Tensor], done: set[int]) -> None:
        self.report(len(done))


@dataclass
class Ranking:
    """One query's score for every sequence, exact or the index's approximation, the scores with only the asked
    layers (the same when all are asked), and with normalisation the cosine of every sequence."""

    scores: torch.Tensor  # [N]
    restricted: torch.Tensor  # [N], with only the asked layers
    exact: bool
    cosine: torch.Tensor | None = None  # [N]


def rank_all(session: ExplorerSession, query: Query, report: Callable[[int, int], None],
             normalize: bool = False, layers: list[TrackedLayer] | None = None) -> Ranking:
    """Scores (and with ``normalize`` cosines) of every sequence, also with only ``layers`` (default: all);
    ``report(done, total)`` is called as the work advances."""
    loaded = session.loaded
    asked = None if layers is None or len(layers) == len(session.layers) else [layer.name for layer in layers]
    if session.index is not None:
        report(0, 1)
        gradients = query_gradients(loaded.model, session.layers, [query], session.options.batch_size, quiet=True)
        scores = session.index.scores(gradients, session.options.damping)[0]
        restricted = scores if asked is None else session.index.scores(gradients, session.options.damping, asked)[0]
        cosine = index_cosine(session.index, scores[None], query_self_influence(
            session.curvature, gradients, session.options.damping))[0].float() if normalize else None
        report(1, 1)
        return Ranking(scores, restricted, exact=False, cosine=cosine)
    n = len(session.sequences)
    n_shards = -(-n // PROGRESS_SHARD)
    options = replace(session.options, shard_size=PROGRESS_SHARD, per_layer=True, normalize=normalize)
    result = score(loaded.model, loaded.tokenizer, session.layers, session.curvature, [query], session.sequences,
                   options, quiet=True, checkpoints=ShardProgress(None, "", lambda done: report(done, n_shards)))
    names = [layer.name for layer in session.layers]
    scores = result.scores[0].float()
    restricted = scores if asked is None else result.per_layer[[names.index(name) for name in asked], 0].float().sum(0)
    return Ranking(scores, restricted, exact=True,
                   cosine=None if result.cosine is None else result.cosine[0].float())


def rescore(session: ExplorerSession, query: Query, rows: list[int], layers: list[TrackedLayer],
            normalize: bool = False) -> ScoreResult:
    """Exact scores of the sequences ``rows`` with only ``layers``, split per token, per layer and per unit (and
    their cosines with ``normalize``)."""
    options = replace(session.options, per_layer=True, per_token=True, per_unit=SHOWN_UNITS, top_k=len(rows),
                      normalize=normalize)
    return score(session.loaded.model, session.loaded.tokenizer, layers, session.curvature, [query],
                 [session.sequences[r] for r in rows], options, quiet=True)
