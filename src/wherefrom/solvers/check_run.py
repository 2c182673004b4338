"""Load what `wherefrom check` needs from a run folder and run the trust check."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from wherefrom.curvature.opening import open_run
from wherefrom.data.queries import read_queries
from wherefrom.errors import WherefromError
from wherefrom.options import ScoreOptions
from wherefrom.scoring.generation import complete_queries
from wherefrom.solvers.sample import as_queries, flat_gradients, sample_sequences
from wherefrom.solvers.trust import CheckOptions, TrustReport, trust_check


def check_run(run: str | Path, corpus: str | Path | None, queries: str | Path | None, options: CheckOptions,
              quiet: bool = False) -> TrustReport:
    """EK-FAC of the run in ``run`` against the reference solver, on ``queries`` or corpus sequences' gradients."""
    if options.iterations < 1 or options.sample < 1 or options.n_queries < 1:
        raise WherefromError("--iterations, --sample and --n-queries must be at least 1.")
    opened = open_run(run)
    if opened.factors.strategy not in ("ekfac", "kfac", "diagonal"):
        raise WherefromError(f"the run was fitted with strategy {opened.factors.strategy!r}, which has no curvature "
                             "to check; fit with --strategy ekfac.")
    options = replace(options, **opened.data)
    loaded, layers = opened.loaded, opened.layers
    sequences = opened.sequences(corpus, options.max_length, options.pack)
    if queries is None:
        query_list = as_queries(sample_sequences(sequences, options.n_queries, seed=2))
    else:
        score_options = ScoreOptions(max_length=options.max_length)
        query_list = complete_queries(loaded.model, loaded.tokenizer,
                                      read_queries(queries, loaded.tokenizer, options.max_length), score_options, quiet)
    b = flat_gradients(loaded.model, layers, query_list, options.batch_size, quiet)
    return trust_check(loaded.model, layers, opened.curvature, b, sequences, options, quiet)
