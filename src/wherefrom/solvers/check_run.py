"""Load what `wherefrom check` needs from a run folder, then run the trust check or estimate its cost."""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path

from torch import nn

from wherefrom.costs.estimate import CostEstimate, Stage
from wherefrom.curvature.fitting import FittedCurvature
from wherefrom.curvature.store import check_compatible, load_run
from wherefrom.data.corpus import TrainingSequence, build_sequences
from wherefrom.data.queries import Query, read_queries
from wherefrom.data.records import read_records
from wherefrom.errors import WherefromError
from wherefrom.models.loading import load_model
from wherefrom.models.selection import TrackedLayer, select_layers
from wherefrom.options import ScoreOptions
from wherefrom.scoring.generation import complete_queries
from wherefrom.solvers.ggn import GaussNewton
from wherefrom.solvers.layout import Layout
from wherefrom.solvers.sample import as_queries, flat_gradients, sample_sequences
from wherefrom.solvers.trust import CheckOptions, TrustReport, spread_layers, trust_check


@dataclass
class CheckInputs:
    """The model, the checked layers (of ``tracked``), the run's curvature, the corpus sequences and the queries."""

    model: nn.Module
    layers: list[TrackedLayer]
    tracked: int
    curvature: FittedCurvature
    sequences: list[TrainingSequence]
    queries: list[Query]
    options: CheckOptions


def check_run(run: str | Path, corpus: str | Path | None, queries: str | Path | None, options: CheckOptions,
              quiet: bool = False) -> TrustReport:
    """EK-FAC of the run in ``run`` against the reference solver, on ``queries`` or corpus sequences' gradients."""
    inputs = load_check(run, corpus, queries, options, quiet)
    b = flat_gradients(inputs.model, inputs.layers, inputs.queries, inputs.options.batch_size, quiet)
    return trust_check(inputs.model, inputs.layers, inputs.curvature, b, inputs.sequences, inputs.options, quiet,
                       inputs.tracked)


def load_check(run: str | Path, corpus: str | Path | None, queries: str | Path | None, options: CheckOptions,
               quiet: bool = False, write_completions: bool = True) -> CheckInputs:
    """What the check works on; prompt-only queries are completed by the model unless ``write_completions`` is
    False (a dry run, which counts the most tokens generation may write for them instead)."""
    if options.iterations < 1 or options.sample < 1 or options.n_queries < 1 or options.layers < 0:
        raise WherefromError("--iterations, --sample and --n-queries must be at least 1, and --layers at least 0.")
    if options.tolerance <= 0 or (options.budget is not None and options.budget <= 0):
        raise WherefromError("--tolerance and --budget must be positive.")
    factors = load_run(Path(run))
    fitted = factors.manifest["options"]
    if factors.strategy not in ("ekfac", "kfac", "diagonal"):
        raise WherefromError(f"the run was fitted with strategy {factors.strategy!r}, which has no curvature to "
                             "check; fit with --strategy ekfac.")
    options = replace(options, max_length=fitted["max_length"], pack=fitted["pack"], batch_size=fitted["batch_size"])
    loaded = load_model(factors.manifest["model"]["source"])
    tracked = select_layers(loaded.model, fitted["modules"])
    check_compatible(factors, loaded.fingerprint, tracked)
    sequences = build_sequences(read_records(corpus if corpus is not None else fitted["corpus"]), loaded.tokenizer,
                                options.max_length, options.pack)
    if queries is None:
        query_list = as_queries(sample_sequences(sequences, options.n_queries, seed=2))
    else:
        query_list = read_queries(queries, loaded.tokenizer, options.max_length)
        if write_completions:
            query_list = complete_queries(loaded.model, loaded.tokenizer, query_list,
                                          ScoreOptions(max_length=options.max_length), quiet)
    return CheckInputs(loaded.model, spread_layers(tracked, options.layers), len(tracked), factors.curvature,
                       sequences, query_list, options)


def estimate_check(run: str | Path, corpus: str | Path | None, queries: str | Path | None, options: CheckOptions
                   ) -> CostEstimate:
    """What `wherefrom check` with these arguments will cost: one Gauss-Newton product is timed on one batch of
    the sample, for the checked layers and queries, and multiplied by the batches and iterations."""
    inputs = load_check(run, corpus, queries, options, quiet=True, write_completions=False)
    options, layers = inputs.options, inputs.layers
    new_tokens = ScoreOptions().max_new_tokens
    padded = [q if not q.needs_completion else replace(q, completion_ids=(0,) * max(
        1, min(new_tokens, options.max_length - len(q.prompt_ids)))) for q in inputs.queries]
    start = time.perf_counter()
    b = flat_gradients(inputs.model, layers, padded, options.batch_size, quiet=True)
    gradient_seconds = time.perf_counter() - start
    sample = [s.input_ids for s in sample_sequences(inputs.sequences, options.sample)]
    G = GaussNewton(inputs.model, layers, sample, options.batch_size, block_diagonal=True)
    GaussNewton(inputs.model, layers[:1], sample[:1], 1, block_diagonal=True)(b[:1, :Layout.of(layers[:1]).size])
    start = time.perf_counter()  # after a warm-up on one sequence and layer: one batch, every layer and query
    G.summed_over(G.batches[0], b)
    per_iteration = (time.perf_counter() - start) / G.batches[0].rows.numel() * len(sample)
    n_products = options.iterations + 1 if options.solver == "cg" else options.iterations / len(G.batches) + 21
    solver_seconds = per_iteration * n_products
    limit = "" if options.budget is None else f"; --budget stops it after about {options.budget:g} s"
    if options.budget is not None:
        solver_seconds = min(solver_seconds, options.budget + per_iteration)
    vectors = 8 * b.numel() * b.element_size()  # x, r, z, d, A d, b, A x and a temporary
    weights = sum(t.numel() * t.element_size() for t in [*inputs.model.parameters(), *inputs.model.buffers()])
    stages = [
        Stage("model", weights, 0.0, "parameters and buffers"),
        Stage("query gradients", weights + b.numel() * b.element_size(), gradient_seconds,
              f"{len(padded)} queries, timed" + (f"; prompt-only queries counted with {new_tokens} generated "
                                                  "tokens, generation not included" if padded != inputs.queries else "")),
        Stage(f"reference solver ({options.solver})", weights + vectors, solver_seconds,
              f"at most {options.iterations} iterations × {per_iteration:.1f} s (one Gauss-Newton product: "
              f"{len(sample)} sequences × {len(layers)} of {inputs.tracked} layers × {len(padded)} queries, "
              f"timed on one batch){limit}; CG stops once converged"),
    ]
    notes = ["memory: weights and the solver's vectors; the activations of one batch's jvp and vjp are not counted",
             f"fewer --layers (now {len(layers)}), --n-queries or --sample make each iteration cheaper in proportion"]
    return CostEstimate("check", len(sample), sum(map(len, sample)), {"gauss-newton product": per_iteration / len(sample)},
                        stages, {}, notes)
