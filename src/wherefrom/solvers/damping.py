"""`--damping auto`: the λ whose EK-FAC influence agrees best with an iterative solver's, on a sample.

Candidates: the paper's per-layer default (0.1 × each layer's mean eigenvalue) and absolute values λ = d·10^k,
k = -3..2, d the mean of the per-layer defaults. Reference: the full damped Gauss-Newton solution at the smallest
candidate λ_ref (EK-FAC-preconditioned CG on a sample of the corpus), i.e. influence with as little damping as
the solver can handle. Agreement: Pearson correlation, per query, between the candidate's and the reference's
scores of a second, held-out sample of sequences, averaged over queries. A larger λ hides EK-FAC's errors in
low-curvature directions but pulls every score towards the plain gradient dot product: the best λ trades the two.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from rich.console import Console
from rich.table import Table
from torch import nn

from wherefrom.curvature.fitting import FittedCurvature
from wherefrom.data.corpus import TrainingSequence
from wherefrom.data.queries import Query
from wherefrom.errors import WherefromError
from wherefrom.models.selection import TrackedLayer
from wherefrom.options import REFINES, ScoreOptions
from wherefrom.solvers.layout import Layout
from wherefrom.solvers.preconditioned import curvature_inverse, layer_dampings
from wherefrom.solvers.refine import refine_solution
from wherefrom.solvers.sample import flat_gradients, sample_sequences, scores_on

_EXPONENTS = range(-3, 3)
_console = Console(stderr=True)


@dataclass
class DampingCurve:
    """Each candidate λ (None: the per-layer default) and its agreement with the reference."""

    candidates: list[float | None]
    agreement: list[float]
    reference_damping: float
    reference_residual: float  # the reference CG's largest final relative residual

    @property
    def chosen(self) -> float | None:
        return self.candidates[max(range(len(self.agreement)), key=self.agreement.__getitem__)]


def pearson_rows(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Pearson correlation of each row of x with the same row of y: [Q]."""
    x, y = x.double() - x.double().mean(-1, keepdim=True), y.double() - y.double().mean(-1, keepdim=True)
    return (x * y).sum(-1) / (x.norm(dim=-1) * y.norm(dim=-1)).clamp_min(1e-300)


def damping_curve(model: nn.Module, layers: list[TrackedLayer], curvature: FittedCurvature, queries: list[Query],
                  sequences: list[TrainingSequence], options: ScoreOptions, quiet: bool = False) -> DampingCurve:
    """Agreement of EK-FAC influence with the reference for every candidate λ (see the module docstring)."""
    layout = Layout.of(layers)
    defaults = layer_dampings(curvature.layers, layout, None)
    d = sum(defaults.values()) / len(defaults)
    candidates: list[float | None] = [None, *(d * 10.0 ** k for k in _EXPONENTS)]
    b = flat_gradients(model, layers, queries, options.batch_size, quiet)
    held_out = sample_sequences(sequences, options.refine_sample, seed=1)
    reference_damping = d * 10.0 ** min(_EXPONENTS)
    reference = refine_solution(model, layers, curvature, b, sequences, reference_damping, 2 * options.refine_iterations,
                                options.refine_sample, options.batch_size, quiet)
    reference_scores = scores_on(model, layers, reference.x, held_out, options.batch_size, quiet=True)
    agreement = []
    for candidate in candidates:
        V = curvature_inverse(curvature.layers, layout, layer_dampings(curvature.layers, layout, candidate), b.device)(b)
        scores = scores_on(model, layers, V, held_out, options.batch_size, quiet=True)
        agreement.append(float(pearson_rows(scores, reference_scores).mean()))
    return DampingCurve(candidates, agreement, reference_damping, float(reference.residuals[-1].max()))


def auto_damping(model: nn.Module, layers: list[TrackedLayer], curvature: FittedCurvature, queries: list[Query],
                 sequences: list[TrainingSequence], options: ScoreOptions, quiet: bool = False) -> float | None:
    """The λ that `--damping auto` chooses (None: the per-layer default won), with its curve printed."""
    curve = damping_curve(model, layers, curvature, queries, sequences, options, quiet)
    if not quiet:
        print_curve(curve)
    return curve.chosen


def print_curve(curve: DampingCurve) -> None:
    """The candidates and their agreement as a table on stderr, the chosen one marked."""
    table = Table(title=f"--damping auto: Pearson with CG at λ = {curve.reference_damping:.3g} "
                        f"(CG residual {curve.reference_residual:.2g})")
    table.add_column("λ")
    table.add_column("agreement", justify="right")
    for candidate, value in zip(curve.candidates, curve.agreement):
        label = "0.1 × mean eigenvalue per layer" if candidate is None else f"{candidate:.3g}"
        mark = " ← chosen" if candidate == curve.chosen else ""
        table.add_row(label + mark, f"{value:.3f}")
    _console.print(table)


def check_solver_options(options: ScoreOptions) -> None:
    """Refuse a damping, refinement or sample size that the solvers cannot use, naming the fix."""
    if isinstance(options.damping, str) and options.damping != "auto":
        raise WherefromError(f"--damping {options.damping!r} is neither a number nor 'auto'.")
    if isinstance(options.damping, (int, float)) and options.damping < 0:
        raise WherefromError(f"--damping must be non-negative, got {options.damping}.")
    if options.refine not in REFINES:
        raise WherefromError(f"--refine {options.refine!r} is not one of: {', '.join(REFINES)}.")
    if options.refine_iterations < 1 or options.refine_sample < 1:
        raise WherefromError("--refine-iterations and --refine-sample must be at least 1.")


def parse_damping(value: str | None) -> float | str | None:
    """A --damping value from the command line: a number, 'auto', or nothing (the per-layer default)."""
    if value is None or value == "auto":
        return value
    try:
        return float(value)
    except ValueError:
        raise WherefromError(f"--damping {value!r} is neither a number nor 'auto'.") from None
