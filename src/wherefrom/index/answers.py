"""Answer queries from a gradient index alone: the whole score matrix, with no pass over the corpus."""

from __future__ import annotations

import torch

from wherefrom.curvature.fitting import FittedCurvature
from wherefrom.data.corpus import TrainingSequence
from wherefrom.data.queries import Query
from wherefrom.errors import WherefromError
from wherefrom.index.store import GradientIndex
from wherefrom.options import ScoreOptions
from wherefrom.scoring.cosine import cosine, query_self_influence
from wherefrom.scoring.query_gradients import QueryGradients
from wherefrom.scoring.results import ScoreResult
from wherefrom.scoring.scorer import query_infos, sequence_info


def index_result(index: GradientIndex, gradients: QueryGradients, queries: list[Query],
                 sequences: list[TrainingSequence], tokenizer: object, options: ScoreOptions,
                 curvature: FittedCurvature) -> ScoreResult:
    """Scores of every indexed sequence from the index (per layer too when asked; cosines with --normalize)."""
    if options.per_token or options.self_influence:
        raise WherefromError("an index keeps no tokens: per-token scores and self-influence need the sequences "
                             "themselves; drop --rescore 0 to score the index's top sequences per query exactly.")
    if options.query_rank is not None:
        raise WherefromError("--query-rank applies to exact scoring; with --index drop --rescore 0.")
    if options.normalize and options.damping is not None:
        raise WherefromError("the index stores self-influence at each layer's default damping; with --normalize "
                             "and --damping, drop --rescore 0 so the top sequences are normalised exactly at your "
                             "damping.")
    per_layer = index.per_layer_scores(gradients, options.damping) if options.per_layer else None
    scores = per_layer.sum(0) if per_layer is not None else index.scores(gradients, options.damping)
    query_self = query_self_influence(curvature, gradients, options.damping) if options.normalize else None
    return ScoreResult(
        scores=scores,
        sequences=[sequence_info(s, tokenizer, False) for s in sequences],
        queries=query_infos(queries, gradients.logprobs),
        layer_names=index.layer_names,
        per_layer=per_layer,
        cosine=None if query_self is None else index_cosine(index, scores, query_self).float(),
        query_self_influence=query_self,
    )


def index_ranking(index: GradientIndex, gradients: QueryGradients, curvature: FittedCurvature,
                  options: ScoreOptions) -> torch.Tensor:
    """What the index ranks sequences by [Q, N]: its approximate influence, or with --normalize its cosine (the
    training norms are at the default damping whatever ``options.damping``: good enough to choose candidates)."""
    scores = index.scores(gradients, options.damping)
    if not options.normalize:
        return scores
    return index_cosine(index, scores, query_self_influence(curvature, gradients, options.damping))


def index_cosine(index: GradientIndex, scores: torch.Tensor, query_self: torch.Tensor) -> torch.Tensor:
    """The index's scores over the query norms and the stored training norms (see scoring/cosine.py): [Q, N]."""
    if index.self_influence is None:
        raise WherefromError(f"the index {index.folder} stores no self-influence (built by an earlier wherefrom), "
                             "which --normalize needs; build it again with `wherefrom index ... --restart`.")
    return cosine(scores, query_self, torch.from_numpy(index.self_influence))
