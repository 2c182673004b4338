"""`wherefrom check`: how far EK-FAC's (G + λI)⁻¹ v is from an iterative solver's, per layer, in numbers and words.

Both solve the same damped, block-diagonal Gauss-Newton system (the layer-independence EK-FAC assumes), with G
on a seeded sample of the corpus, for a few query gradients v. Per layer and overall: the relative error
‖x̃ - x‖ / ‖x‖ and the cosine between EK-FAC's x̃ and the solver's x, averaged over the queries.

Why the cosine decides the verdict: an influence score is ⟨x, ∇L_z⟩. For training gradients spread evenly in
direction, the Pearson correlation between ⟨x̃, ∇L_z⟩ and ⟨x, ∇L_z⟩ over z equals cos(x̃, x). So cosine ≥ 0.9
means EK-FAC's scores track the exact damped Gauss-Newton scores closely (the paper treats Pearson 0.995 as
interchangeable, and reports EK-FAC and LiSSA agreeing with PBRF about equally), ≥ 0.7 means rankings are
broadly right but individual scores are not, and below that the approximation is not to be trusted. A verdict
needs a converged reference: with a relative residual above 0.1 the check says so instead.

Cost: every iteration is one Gauss-Newton product per checked layer, query and sample sequence (a jvp and a vjp
through the model), so the default checks a few layers spread over depth: each layer's block is its own system,
solved by its own CG, so its numbers do not depend on which other layers are checked. CG stops once every layer
has converged, or when --budget seconds have passed (by default as long as the run's fit took; then the verdict
is "inconclusive", with its numbers).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from wherefrom.curvature.fitting import FittedCurvature
from wherefrom.data.corpus import TrainingSequence
from wherefrom.models.selection import TrackedLayer
from wherefrom.options import DataOptions, option
from wherefrom.progress import Bar, progress_bar
from wherefrom.solvers.ggn import GaussNewton
from wherefrom.solvers.iterative import conjugate_gradient, damped, largest_eigenvalue, lissa, solver_dtype
from wherefrom.solvers.layout import Layout
from wherefrom.solvers.preconditioned import curvature_inverse, layer_dampings
from wherefrom.solvers.sample import sample_sequences

TRUSTWORTHY, ROUGH, CONVERGED = 0.9, 0.7, 0.1  # cosine thresholds and the reference's largest residual


@dataclass(frozen=True)
class CheckOptions(DataOptions):
    """Options of `check`: the reference solver and the sample it works on."""

    solver: Literal["cg", "lissa"] = option(
        "cg", "Reference solver: 'cg' (conjugate gradient preconditioned by EK-FAC) or 'lissa' (no preconditioner).")
    iterations: int = option(
        30, "At most this many iterations of the reference solver (CG stops earlier once every layer has converged).")
    tolerance: float = option(
        0.01, "CG has converged on a layer when its relative residual ‖b - A x‖ / ‖b‖ is below this, for every query.")
    budget: float | None = option(
        None, "Seconds the reference solver may run: it stops after the iteration that passes them, and an "
              "unconverged solver makes the verdict 'inconclusive' (default: as long as the run's fit took).")
    layers: int = option(
        3, "Check this many tracked layers, spread evenly from the first to the last (0: all of them). Each "
           "iteration costs one Gauss-Newton product per checked layer, so the time grows with it.")
    sample: int = option(8, "Corpus sequences (a seeded sample) on which the Gauss-Newton Hessian is formed.")
    n_queries: int = option(2, "Without --queries: this many corpus sequences' own gradients serve as queries.")
    damping: float | None = option(None, "Damping λ, as in `score` (default: 0.1 × each layer's mean eigenvalue).")


@dataclass
class Agreement:
    """EK-FAC against the reference on one layer (or all of them): means over queries."""

    name: str
    relative_error: float
    cosine: float
    residual: float  # the reference's relative residual ‖b - A x‖ / ‖b‖ (largest over queries)


@dataclass
class TrustReport:
    """Per-layer agreements, the overall one, and the verdict in words."""

    layers: list[Agreement]
    overall: Agreement
    solver: str
    iterations: int  # done (CG may stop early)
    verdict: str
    explanation: str
    stopped: str  # why the solver stopped, in words
    seconds: float  # the solver's wall time
    tracked: int  # tracked layers of the run (len(layers) of them were checked)


def agreement(name: str, estimate: torch.Tensor, reference: torch.Tensor, b: torch.Tensor, Ax: torch.Tensor
              ) -> Agreement:
    """Relative error, cosine and residual of rows [Q, n] (one layer's block, or everything)."""
    tiny = torch.finfo(torch.float64).tiny
    estimate, reference, b, Ax = (t.double() for t in (estimate, reference, b, Ax))
    error = (estimate - reference).norm(dim=-1) / reference.norm(dim=-1).clamp_min(tiny)
    cosine = (estimate * reference).sum(-1) / (estimate.norm(dim=-1) * reference.norm(dim=-1)).clamp_min(tiny)
    residual = (b - Ax).norm(dim=-1) / b.norm(dim=-1).clamp_min(tiny)
    return Agreement(name, float(error.mean()), float(cosine.mean()), float(residual.max()))


def verdict(overall: Agreement, layers: list[Agreement], stopped: str = "") -> tuple[str, str]:
    """("trustworthy" | "roughly right" | "not trustworthy" | "inconclusive", an explanation with the numbers);
    ``stopped`` says why the solver stopped (named when it had not converged)."""
    weak = [a.name for a in layers if a.cosine < ROUGH]
    numbers = f"cosine {overall.cosine:.3f}, relative error {overall.relative_error:.3f}"
    if overall.residual > CONVERGED:
        why = f", {stopped}" if stopped else ""
        return "inconclusive", (f"the iterative solver has not converged (relative residual {overall.residual:.2g} > "
                                f"{CONVERGED}{why}); rerun with more --iterations or --budget, or fewer --n-queries "
                                f"or --sample, before judging EK-FAC ({numbers} so far).")
    weak_text = f" Layers that disagree most (cosine < {ROUGH}): {', '.join(weak[:6])}." if weak else ""
    if overall.cosine >= TRUSTWORTHY:
        return "trustworthy", (f"EK-FAC's inverse-Hessian-vector products match the damped Gauss-Newton solution "
                               f"({numbers}); its influence scores can be read as the paper's.{weak_text}")
    if overall.cosine >= ROUGH:
        return "roughly right", (f"EK-FAC points the right way but not precisely ({numbers}): trust rankings "
                                 f"more than individual scores, or score with --refine cg.{weak_text}")
    return "not trustworthy", (f"EK-FAC's inverse-Hessian-vector products differ from the damped Gauss-Newton "
                               f"solution ({numbers}); refit on more data, raise the damping, or score with "
                               f"--refine cg.{weak_text}")


def spread_layers(layers: list[TrackedLayer], count: int) -> list[TrackedLayer]:
    """``count`` of ``layers`` spread evenly from the first to the last (all of them for 0 or count ≥ len)."""
    if count <= 0 or count >= len(layers):
        return list(layers)
    if count == 1:
        return [layers[len(layers) // 2]]
    return [layers[round(i * (len(layers) - 1) / (count - 1))] for i in range(count)]


def trust_check(model: nn.Module, layers: list[TrackedLayer], curvature: FittedCurvature, b: torch.Tensor,
                sequences: list[TrainingSequence], options: CheckOptions, quiet: bool = False,
                tracked: int | None = None) -> TrustReport:
    """Compare EK-FAC's (G + λI)⁻¹ b with the reference solver's for query gradients b [Q, P], layer by layer.

    ``layers`` are the checked layers (b holds their gradients); ``tracked`` the run's count, for the report."""
    b = b.to(solver_dtype(b.dtype))  # x, λ and the preconditioner's products in float32 (precision policy)
    layout = Layout.of(layers)
    dampings = layer_dampings(curvature.layers, layout, options.damping)
    damping = layout.expand(dampings, b.dtype, b.device)
    G = GaussNewton(model, layers, [s.input_ids for s in sample_sequences(sequences, options.sample)],
                    options.batch_size, block_diagonal=True)
    A = damped(G, damping)
    M = curvature_inverse(curvature.layers, layout, dampings, b.device)
    solver = "CG" if options.solver == "cg" else "LiSSA"
    watch = _Watch(solver, options)
    products = (options.iterations + 1) * G.products_per_call  # and one more product for the final residual
    if options.solver == "lissa":
        products = (POWER_ITERATIONS + 1) * G.products_per_call + options.iterations * len(layers)
    with progress_bar(products, f"{solver} on {len(layers)} layers: starting", quiet) as bar:
        G.on_product = bar.advance
        watch.bar = bar
        if options.solver == "cg":
            solution = conjugate_gradient(A, b, options.iterations, preconditioner=M, quiet=True,
                                          blocks=layout.sizes, stop=watch)
        else:
            bar.describe(f"LiSSA on {len(layers)} layers: largest eigenvalue (power iteration)")
            scale = 1.5 * largest_eigenvalue(A, layout.size, b.dtype, POWER_ITERATIONS, device=b.device)
            solution = lissa(lambda v, step: G.minibatch(v, step) + damping * v, b, scale, options.iterations,
                             quiet=True, stop=watch)
        x = solution.x
        bar.describe(f"{solver} on {len(layers)} layers: final residual")
        estimate, Ax = M(b), A(x)
        bar.finish()
    parts = [layout.split(t) for t in (estimate, x, b, Ax)]
    per_layer = [agreement(name, *(p[name].flatten(-2) for p in parts)) for name in layout.names]
    tracked = tracked or len(layers)
    overall = agreement("all layers" if len(layers) == tracked else f"the {len(layers)} checked layers",
                        estimate, x, b, Ax)
    stopped = watch.reason(solution.iterations, overall.residual)
    word, explanation = verdict(overall, per_layer, stopped)
    return TrustReport(per_layer, overall, options.solver, solution.iterations, word, explanation, stopped,
                       watch.elapsed(), tracked)


POWER_ITERATIONS = 20  # LiSSA's scale: 1.5 × A's largest eigenvalue, by power iteration


class _Watch:
    """Asked after each solver iteration: shows it on the progress bar, stops at convergence (CG) or the budget."""

    def __init__(self, name: str, options: CheckOptions) -> None:
        self.name, self.options, self.start = name, options, time.perf_counter()
        self.bar: Bar | None = None
        self.converged = self.out_of_time = False

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def __call__(self, iteration: int, residuals: torch.Tensor) -> bool:
        worst = float(residuals.max())
        self.converged = self.name == "CG" and worst < self.options.tolerance
        self.out_of_time = self.options.budget is not None and self.elapsed() > self.options.budget
        if self.bar is not None:
            shown = "" if math.isnan(worst) else f", largest residual {worst:.2g}"
            self.bar.describe(f"{self.name} iteration {iteration}/{self.options.iterations}{shown}")
            self.bar.note(f"{self.name} iteration {iteration}/{self.options.iterations}{shown} "
                          f"({self.elapsed():.0f} s)")
        return self.converged or self.out_of_time

    def reason(self, iterations: int, residual: float) -> str:
        """Why the solver stopped, in words."""
        if self.converged:
            return f"converged after {iterations} iterations (every layer's residual below {self.options.tolerance})"
        if self.out_of_time:
            return (f"stopped after {iterations} of {self.options.iterations} iterations: the --budget of "
                    f"{self.options.budget:g} s ran out")
        return f"ran all {iterations} iterations (residual {residual:.2g})"
