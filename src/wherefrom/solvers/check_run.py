"""Load what `wherefrom check` needs from a run folder and run the trust check."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from torch import nn

from wherefrom.curvature.fitting import FittedCurvature
from wherefrom.curvature.opening import open_run
from wherefrom.data.corpus import TrainingSequence, corpus_fingerprint
from wherefrom.data.queries import Query, read_queries
from wherefrom.errors import WherefromError
from wherefrom.models.selection import TrackedLayer
from wherefrom.options import ExecutionOptions, FitOptions, ScoreOptions
from wherefrom.scoring.generation import complete_queries
from wherefrom.solvers.reference import fit_options_of, like_with_like
from wherefrom.solvers.sample import as_queries, flat_gradients, sample_sequences
from wherefrom.solvers.trust import CheckOptions, TrustReport, spread_layers, trust_check


@dataclass
class CheckInputs:
    """The model, the checked layers (of ``tracked``), the run's curvature and fit options, the corpus sequences
    (``fitted``: they are the run's own), and the queries."""

    model: nn.Module
    layers: list[TrackedLayer]
    tracked: int
    curvature: FittedCurvature
    fit_options: FitOptions
    sequences: list[TrainingSequence]
    fitted: bool
    queries: list[Query]
    options: CheckOptions
    fit_seconds: float | None  # how long the run's fit took (its manifest), None for runs fitted before it was kept

    @property
    def refits(self) -> bool:
        """Whether the check fits the curvature again, on its sample (see ``solvers/reference.py``)."""
        return not self.fitted or self.options.sample < len(self.sequences)


def check_run(run: str | Path, corpus: str | Path | None, queries: str | Path | None, options: CheckOptions,
              quiet: bool = False, execution: ExecutionOptions = ExecutionOptions()) -> TrustReport:
    """EK-FAC of the run in ``run`` against the reference solver, on ``queries`` or corpus sequences' gradients;
    the model runs where ``execution`` says (dtype 'auto': the run's)."""
    inputs = load_check(run, corpus, queries, options, quiet, execution=execution)
    b = flat_gradients(inputs.model, inputs.layers, inputs.queries, inputs.options.batch_size, quiet)
    reference = like_with_like(inputs.model, inputs.layers, inputs.curvature, inputs.fit_options, inputs.sequences,
                               inputs.options.sample, inputs.options.damping, inputs.fitted, quiet)
    return trust_check(inputs.model, inputs.layers, reference, b, inputs.options, quiet, inputs.tracked)


def load_check(run: str | Path, corpus: str | Path | None, queries: str | Path | None, options: CheckOptions,
               quiet: bool = False, write_completions: bool = True,
               execution: ExecutionOptions = ExecutionOptions()) -> CheckInputs:
    """What the check works on; prompt-only queries are completed by the model unless ``write_completions`` is
    False (a dry run, which counts the most tokens generation may write for them instead)."""
    if options.iterations < 1 or options.sample < 1 or options.n_queries < 1 or options.layers < 0:
        raise WherefromError("--iterations, --sample and --n-queries must be at least 1, and --layers at least 0.")
    if options.tolerance <= 0 or (options.budget is not None and options.budget <= 0):
        raise WherefromError("--tolerance and --budget must be positive.")
    if options.damping is not None and options.damping < 0:
        raise WherefromError(f"--damping must be non-negative, got {options.damping}.")
    opened = open_run(run, execution=execution)
    if opened.factors.strategy not in ("ekfac", "kfac", "diagonal"):
        raise WherefromError(f"the run was fitted with strategy {opened.factors.strategy!r}, which has no curvature "
                             "to check; fit with --strategy ekfac.")
    options = replace(options, **opened.data)
    fit_seconds = opened.factors.manifest.get("fit_seconds")
    if options.budget is None:  # as long as the fit took (runs fitted before it was recorded: no limit)
        options = replace(options, budget=fit_seconds)
    loaded, tracked = opened.loaded, opened.layers
    sequences = opened.sequences(corpus, options.max_length, options.pack)
    if queries is None:
        query_list = as_queries(sample_sequences(sequences, options.n_queries, seed=2))
    else:
        query_list = read_queries(queries, loaded.tokenizer, options.max_length)
        if write_completions:
            query_list = complete_queries(loaded.model, loaded.tokenizer, query_list,
                                          ScoreOptions(max_length=options.max_length), quiet)
    fitted = corpus_fingerprint(sequences) == opened.factors.manifest.get("corpus_fingerprint")  # the run's own
    return CheckInputs(loaded.model, spread_layers(tracked, options.layers), len(tracked), opened.curvature,
                       fit_options_of(opened.fitted, options.batch_size), sequences, fitted, query_list, options, fit_seconds)
