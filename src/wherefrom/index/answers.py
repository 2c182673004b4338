"""Answer queries from a gradient index alone: the whole score matrix, with no pass over the corpus."""

from __future__ import annotations

from wherefrom.data.corpus import TrainingSequence
from wherefrom.data.queries import Query
from wherefrom.errors import WherefromError
from wherefrom.index.store import GradientIndex
from wherefrom.options import ScoreOptions
from wherefrom.scoring.query_gradients import QueryGradients
from wherefrom.scoring.results import ScoreResult
from wherefrom.scoring.scorer import query_infos, sequence_info


def index_result(index: GradientIndex, gradients: QueryGradients, queries: list[Query],
                 sequences: list[TrainingSequence], tokenizer: object, options: ScoreOptions) -> ScoreResult:
    """Scores of every indexed sequence from the index (per layer too when asked)."""
    if options.per_token or options.self_influence:
        raise WherefromError("an index keeps no tokens: per-token scores and self-influence need the sequences "
                             "themselves; drop --rescore 0 to score the index's top sequences per query exactly.")
    if options.query_rank is not None:
        raise WherefromError("--query-rank applies to exact scoring; with --index drop --rescore 0.")
    per_layer = index.per_layer_scores(gradients, options.damping) if options.per_layer else None
    return ScoreResult(
        scores=per_layer.sum(0) if per_layer is not None else index.scores(gradients, options.damping),
        sequences=[sequence_info(s, tokenizer, False) for s in sequences],
        queries=query_infos(queries, gradients.logprobs),
        layer_names=index.layer_names,
        per_layer=per_layer,
    )
