"""Dry run of `check`: time one Gauss-Newton product of the checked layers on one batch of the sample, multiply.

Nothing is written. The model is opened where the check would run it (``--device``, ``--dtype``), so the product
is timed there, and the plan names that execution. Time = the timed product (all checked layers and queries, one
batch) scaled to the sample, times the solver's iterations (CG: at most --iterations; LiSSA: one batch per
iteration, plus its power iteration and two products for its residual and energy cosine). When the check fits the
curvature again on its sample, that fit is estimated from the run's recorded fit time, scaled by tokens.
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

from wherefrom.costs.estimate import CostEstimate, Stage
from wherefrom.costs.timing import wait_for_device
from wherefrom.engine.execution import Execution
from wherefrom.options import ExecutionOptions, ScoreOptions
from wherefrom.solvers.check_run import load_check
from wherefrom.solvers.ggn import GaussNewton
from wherefrom.solvers.layout import Layout
from wherefrom.solvers.sample import flat_gradients, sample_sequences
from wherefrom.solvers.trust import POWER_ITERATIONS, CheckOptions


def estimate_check(run: str | Path, corpus: str | Path | None, queries: str | Path | None, options: CheckOptions,
                   execution: ExecutionOptions = ExecutionOptions()) -> CostEstimate:
    """What `wherefrom check` with these arguments will cost where ``execution`` puts the model: one Gauss-Newton
    product is timed on one batch of the sample, for the checked layers and queries, and multiplied by the batches
    and iterations."""
    inputs = load_check(run, corpus, queries, options, quiet=True, write_completions=False, execution=execution)
    options, layers = inputs.options, inputs.layers
    new_tokens = ScoreOptions().max_new_tokens
    padded = [q if not q.needs_completion else replace(q, completion_ids=(0,) * max(
        1, min(new_tokens, options.max_length - len(q.prompt_ids)))) for q in inputs.queries]
    start = time.perf_counter()
    b = flat_gradients(inputs.model, layers, padded, options.batch_size, quiet=True)
    wait_for_device(b)
    gradient_seconds = time.perf_counter() - start
    sample = [s.input_ids for s in sample_sequences(inputs.sequences, options.sample)]
    G = GaussNewton(inputs.model, layers, sample, options.batch_size, block_diagonal=True)
    wait_for_device(GaussNewton(inputs.model, layers[:1], sample[:1], 1, block_diagonal=True)(
        b[:1, :Layout.of(layers[:1]).size]))
    start = time.perf_counter()  # after a warm-up on one sequence and layer: one batch, every layer and query
    wait_for_device(G.summed_over(G.batches[0], b))
    per_iteration = (time.perf_counter() - start) / G.batches[0].rows.numel() * len(sample)
    n_products = options.iterations if options.solver == "cg" else options.iterations / len(G.batches) + POWER_ITERATIONS + 2
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
              f"timed on one batch){limit}; CG stops once every layer is settled"),
    ]
    if inputs.refits:
        share = sum(map(len, sample)) / max(1, inputs.curvature.n_tokens)
        seconds = share * (inputs.fit_seconds or 0.0)
        stages.insert(2, Stage("curvature fitted on the sample", weights, seconds,
                               f"{share:.2f} × the run's fit time (its tokens' share)" if inputs.fit_seconds else
                               "the run did not record its fit time: not estimated"))
    notes = ["memory: weights and the solver's vectors; the activations of one batch's jvp and vjp are not counted",
             f"fewer --layers (now {len(layers)}), --n-queries or --sample make each iteration cheaper in proportion"]
    ran = Execution.of(inputs.model).describe()  # one process; the check keeps no factor sums
    return CostEstimate("check", len(sample), sum(map(len, sample)), {"gauss-newton product": per_iteration / len(sample)},
                        stages, {}, notes, {key: ran[key] for key in ("device", "dtype", "processes")})
