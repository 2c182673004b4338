"""`--refine cg`: the EK-FAC-preconditioned query gradients refined by conjugate gradient on the damped GGN.

x solves (G + λI) x = ∇L_q with G the full Gauss-Newton Hessian of the tracked layers (layers coupled) on a
seeded sample of corpus sequences, by CG preconditioned with EK-FAC's (G̃ + λI)⁻¹ and started from EK-FAC's
answer. Refinement touches only the few query vectors and the sample: it adds no pass over the corpus.
"""

from __future__ import annotations

import torch
from rich.console import Console
from torch import nn

from wherefrom.curvature.fitting import FittedCurvature
from wherefrom.data.corpus import TrainingSequence
from wherefrom.engine.execution import Execution
from wherefrom.models.selection import TrackedLayer
from wherefrom.options import ScoreOptions
from wherefrom.scoring.lowrank import LowRankQueries, low_rank
from wherefrom.scoring.query_gradients import QueryGradients
from wherefrom.scoring.scorer import Precondition, preconditioned_queries
from wherefrom.solvers.ggn import GaussNewton
from wherefrom.solvers.iterative import Solution, conjugate_gradient, damped, solver_dtype
from wherefrom.solvers.layout import Layout
from wherefrom.solvers.preconditioned import curvature_inverse, layer_dampings
from wherefrom.solvers.sample import sample_sequences

_console = Console(stderr=True)


def refine_solution(model: nn.Module, layers: list[TrackedLayer], curvature: FittedCurvature, b: torch.Tensor,
                    sequences: list[TrainingSequence], damping: float | None, iterations: int, sample: int,
                    batch_size: int, quiet: bool = False, block_diagonal: bool = False) -> Solution:
    """(G + λI)⁻¹ b for flat rows b [Q, P] by EK-FAC-preconditioned CG from EK-FAC's answer, G on a sample."""
    b = b.to(solver_dtype(b.dtype))  # x, λ and the preconditioner's products in float32 (precision policy)
    layout = Layout.of(layers)
    dampings = layer_dampings(curvature.layers, layout, damping)
    G = GaussNewton(model, layers, [s.input_ids for s in sample_sequences(sequences, sample)], batch_size,
                    block_diagonal)
    M = curvature_inverse(curvature.layers, layout, dampings, b.device)
    A = damped(G, layout.expand(dampings, b.dtype, b.device))
    return conjugate_gradient(A, b, iterations, preconditioner=M, x0=M(b),
                              description="refining query gradients (CG)", quiet=quiet)


def refined_queries(model: nn.Module, layers: list[TrackedLayer], curvature: FittedCurvature,
                    gradients: QueryGradients, sequences: list[TrainingSequence], options: ScoreOptions,
                    quiet: bool = False) -> dict[str, torch.Tensor | LowRankQueries]:
    """Preconditioned query gradients per layer, as `preconditioned_queries` gives them, refined by CG."""
    layout = Layout.of(layers)
    dtype = solver_dtype(Execution.of(model).dtype)  # the solver's precision: float32 whatever the model's
    b = layout.join({name: gradients.dense(name, dtype) for name in layout.names})
    solution = refine_solution(model, layers, curvature, b, sequences, options.damping, options.refine_iterations,
                               options.refine_sample, options.batch_size, quiet)
    if not quiet:
        start, end = solution.residuals[0].max(), solution.residuals[-1].max()
        _console.print(f"CG refinement on {min(options.refine_sample, len(sequences))} sequences: relative residual "
                       f"{float(start):.3g} (EK-FAC) → {float(end):.3g} after {solution.iterations} iterations")
    V = layout.split(solution.x)
    return {name: V[name] if options.query_rank is None else low_rank(V[name], options.query_rank)
            for name in layout.names}


def query_preconditioner(model: nn.Module, layers: list[TrackedLayer], curvature: FittedCurvature,
                         sequences: list[TrainingSequence], options: ScoreOptions, quiet: bool = False,
                         execution: Execution | None = None) -> Precondition:
    """(G + λI)⁻¹ ∇L_q as ``options.refine`` asks: EK-FAC's ('none'), or refined by CG on ``sequences`` ('cg').
    Default execution: where ``model`` is, one process."""
    if options.refine == "none":
        running = execution or Execution.of(model)
        return lambda gradients: preconditioned_queries(curvature, gradients, options, running)
    return lambda gradients: refined_queries(model, layers, curvature, gradients, sequences, options, quiet)
