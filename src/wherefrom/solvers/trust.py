"""`wherefrom check`: how far EK-FAC's (G + λI)⁻¹ b is from the exact solution, per layer, in numbers and words.

Both sides solve the same damped, block-diagonal system A = G + λI (see ``solvers/reference.py``: G on a set of
sequences, the curvature fitted on exactly those, the run's λ_ℓ), for a few query gradients b. EK-FAC's answer is
x̃ = M b (M its damped inverse); the reference x = A⁻¹ b is solved by CG preconditioned with M, from x₀ = 0.

What decides the verdict is the energy cosine cos_A(x̃, x) = x̃ᵀAx / (‖x̃‖_A ‖x‖_A) = bᵀx̃ / √(x̃ᵀAx̃ · bᵀA⁻¹b).
An influence score is ⟨x, ∇L_z⟩, and the training gradients ∇L_z have second moment about G (G is their
Fisher): the Pearson correlation of EK-FAC's and the exact scores over z is about cos_G(x̃, x), which the energy
cosine equals where λ is small beside the curvature the gradients live in. The Euclidean cosine weighs instead the
directions of least curvature, where x ≈ b/λ is largest and the gradients have least mass.
benchmarks/check_thresholds.py measures both against the scores' Pearson on exact tiny models
(docs/faithfulness-solvers.md); the thresholds come from that table.

The energy cosine needs only bᵀA⁻¹b, and preconditioned CG from 0 gives it with guarantees: its first step is
x₁ = α x̃ (along EK-FAC's answer), so bᵀx₁ = (bᵀx̃)² / x̃ᵀAx̃, and bᵀx_k rises monotonically to bᵀA⁻¹b, with
bᵀA⁻¹b - bᵀx_k = ‖x - x_k‖²_A. Hence c_k = √(bᵀx₁ / bᵀx_k) is an upper bound on cos_A after any number of
iterations, which falls to cos_A as CG converges, and cos_A = c_k √(1 - ε_k²) with ε_k = ‖x - x_k‖_A / ‖x‖_A.
A curvature far from G is called "not trustworthy" as soon as the bound drops below ROUGH, converged or not. CG's
error ε_k is estimated from its last step's gain, ε̂_k = 4 √((bᵀx_k - bᵀx_{k-1}) / bᵀx_k) (the gain alone is
Strakoš & Tichý's delay-1 estimate, a lower bound on the previous iterate's error; on exact tiny models the true
error was 1.8 times it at the median and 4.1 times at the 90th percentile, benchmarks/check_thresholds.py, hence
the factor 4: an estimate, not a bound). In floating point the gain can come out negative where CG loses
conjugacy; it then counts by its size, and a gain within round-off of the energy means converged as far as the
solver's precision can tell (ε̂ = 0). A layer has
converged once ε̂ ≤ --tolerance. When the solver stops before that (budget or iterations), a layer still gets a
verdict if [c_k √(1 - ε̂²), c_k] lies within one verdict's band, and is "inconclusive" otherwise.

Cost: every iteration is one Gauss-Newton product per checked layer, query and sample sequence (a jvp and a vjp
through the model), so the default checks a few layers spread over depth: each layer's block is its own system,
solved by its own CG. CG stops once every layer's verdict is settled, or when --budget seconds have passed (by
default as long as the run's fit took; a layer still unsettled is then "inconclusive", with its numbers).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from wherefrom.models.selection import TrackedLayer
from wherefrom.options import DataOptions, option
from wherefrom.progress import Bar, progress_bar
from wherefrom.solvers.ggn import GaussNewton
from wherefrom.solvers.iterative import conjugate_gradient, damped, largest_eigenvalue, lissa, solver_dtype
from wherefrom.solvers.layout import Layout
from wherefrom.solvers.preconditioned import curvature_inverse
from wherefrom.solvers.reference import Reference

TRUSTWORTHY, ROUGH = 0.9, 0.7  # energy-cosine thresholds (docs/faithfulness-solvers.md: how they were chosen)
ERROR_FACTOR = 4  # CG's estimated error: this many times the square root of its last step's relative gain
ROUNDOFF_ULPS = 1000  # a relative gain within this many ulps of the energy is round-off (√n ulps for n ~ 10⁶ terms)
CONVERGED = 0.1  # LiSSA: the largest relative residual ‖b - A x‖ / ‖b‖ at which its answer counts as the solution


@dataclass(frozen=True)
class CheckOptions(DataOptions):
    """Options of `check`: the reference solver and the sample it works on."""

    solver: Literal["cg", "lissa"] = option(
        "cg", "Reference solver: 'cg' (conjugate gradient preconditioned by EK-FAC) or 'lissa' (no preconditioner).")
    iterations: int = option(
        30, "At most this many iterations of the reference solver (CG stops earlier once every layer is settled).")
    tolerance: float = option(
        0.1, "CG has converged on a layer when its estimated energy-norm error ‖x - x_k‖_A / ‖x‖_A (4 × the "
             "square root of the last step's relative gain in bᵀx_k) is below this for every query.")
    budget: float | None = option(
        None, "Seconds the reference solver may run: it stops after the iteration that passes them, and a layer "
              "whose verdict is not yet certain by then is 'inconclusive' (default: as long as the run's fit took).")
    layers: int = option(
        3, "Check this many tracked layers, spread evenly from the first to the last (0: all of them). Each "
           "iteration costs one Gauss-Newton product per checked layer, so the time grows with it.")
    sample: int = option(
        8, "Corpus sequences (a seeded sample) on which G is formed; unless they are the whole fitted corpus, the "
           "curvature is fitted again on exactly them (the run's options and damping), so both sides share G.")
    n_queries: int = option(2, "Without --queries: this many corpus sequences' own gradients serve as queries.")
    damping: float | None = option(None, "Damping λ, as in `score` (default: 0.1 × each layer's mean eigenvalue).")


@dataclass
class Agreement:
    """EK-FAC against the reference on one layer (or all of them): means over queries, and the verdict."""

    name: str
    energy_cosine: float  # cos_A(x̃, x) with bᵀx_k for bᵀA⁻¹b: an upper bound for CG, exact once converged
    cosine: float  # Euclidean cos(x̃, x_k)
    relative_error: float  # ‖x̃ - x_k‖ / ‖x_k‖
    solver_error: float  # CG: estimated ‖x - x_k‖_A / ‖x‖_A; LiSSA: relative residual (largest over queries)
    residual: float  # ‖b - A x_k‖ / ‖b‖ (largest over queries)
    verdict: str


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
    refitted: bool  # the curvature was fitted on the sample (False: the run's own factors, G on the fitted corpus)


def energy_cosine(estimate: torch.Tensor, A_estimate: torch.Tensor, b: torch.Tensor, energy: torch.Tensor
                  ) -> torch.Tensor:
    """cos_A(x̃, x) = x̃ᵀAx / (‖x̃‖_A ‖x‖_A) for x = A⁻¹b, written without x: bᵀx̃ / √(x̃ᵀAx̃ · bᵀA⁻¹b), rows [Q, n];
    ``energy`` is bᵀA⁻¹b [Q] (or its CG estimate bᵀx_k, a lower bound: the cosine is then an upper bound)."""
    tiny = torch.finfo(torch.float64).tiny
    estimate, A_estimate, b = (t.double() for t in (estimate, A_estimate, b))
    curvature = ((estimate * A_estimate).sum(-1) * energy.double()).clamp_min(tiny)
    return (b * estimate).sum(-1) / curvature.sqrt()


def energy_error(energies: torch.Tensor) -> torch.Tensor:
    """CG's estimated energy-norm error ‖x - x_k‖_A / ‖x‖_A from its energies bᵀx_j [iterations + 1, ...]:
    ERROR_FACTOR × √(|bᵀx_k - bᵀx_{k-1}| / bᵀx_k) (see the module docstring), 1 before two iterations, and 0 once
    the last gain is within round-off of the energy (ROUNDOFF_ULPS of the solver's precision). A gain that is
    negative beyond round-off (CG's energies rise in exact arithmetic; in floating point they can fall where CG
    loses conjugacy) counts by its size: taken as 0, it had settled a layer whose residual was still 8e-6."""
    if energies.shape[0] < 3:
        return torch.ones_like(energies[-1], dtype=torch.float64)
    last, before = energies[-1].double(), energies[-2].double()
    gain = (last - before).abs() / last.abs().clamp_min(torch.finfo(torch.float64).tiny)
    error = (ERROR_FACTOR * gain.sqrt()).clamp_max(1)
    return error.masked_fill(gain <= ROUNDOFF_ULPS * torch.finfo(energies.dtype).eps, 0.0)


def band(cosine: float) -> str:
    """The verdict word of an energy cosine."""
    return "trustworthy" if cosine >= TRUSTWORTHY else "roughly right" if cosine >= ROUGH else "not trustworthy"


def settled(cosine_bound: float, error: float, tolerance: float) -> str | None:
    """A CG layer's verdict once CG need go no further on it: bounded below ROUGH, or converged; else None."""
    if cosine_bound < ROUGH:
        return "not trustworthy"  # the bound only falls with more iterations
    return band(cosine_bound) if error <= tolerance else None


def cg_verdict(cosine_bound: float, error: float, tolerance: float) -> str:
    """A CG layer's verdict when the solver has stopped: settled, or the band that holds all of
    [c_k √(1 - ε̂²), c_k], or "inconclusive"."""
    word = settled(cosine_bound, error, tolerance)
    if word is not None:
        return word
    lowest = cosine_bound * max(0.0, 1 - error ** 2) ** 0.5
    return band(cosine_bound) if band(lowest) == band(cosine_bound) else "inconclusive"


@dataclass
class _Rows:
    """One layer's (or all layers') rows [Q, n]: EK-FAC's x̃, the reference x_k, b, and the per-query energies."""

    estimate: torch.Tensor
    reference: torch.Tensor
    b: torch.Tensor
    residual: torch.Tensor  # [Q] relative residuals
    energy_cosine: torch.Tensor  # [Q]
    solver_error: torch.Tensor  # [Q]


def agreement(name: str, rows: _Rows, verdict: str) -> Agreement:
    """Means over queries of the rows' measures (largest solver error and residual)."""
    tiny = torch.finfo(torch.float64).tiny
    estimate, reference = rows.estimate.double(), rows.reference.double()
    error = (estimate - reference).norm(dim=-1) / reference.norm(dim=-1).clamp_min(tiny)
    cosine = (estimate * reference).sum(-1) / (estimate.norm(dim=-1) * reference.norm(dim=-1)).clamp_min(tiny)
    return Agreement(name, float(rows.energy_cosine.mean()), float(cosine.mean()), float(error.mean()),
                     float(rows.solver_error.max()), float(rows.residual.max()), verdict)


def overall_verdict(overall: Agreement, layers: list[Agreement], stopped: str) -> tuple[str, str]:
    """("trustworthy" | "roughly right" | "not trustworthy" | "inconclusive", an explanation with the numbers)."""
    numbers = f"energy cosine {overall.energy_cosine:.3f}"
    open_layers = [a.name for a in layers if a.verdict == "inconclusive"]
    weak = [a.name for a in layers if a.verdict == "not trustworthy"]
    weak_text = f" Layers EK-FAC gets wrong (energy cosine < {ROUGH}): {', '.join(weak[:6])}." if weak else ""
    if overall.verdict == "inconclusive":
        return "inconclusive", (f"the reference solver has not converged on {len(open_layers)} layer(s) "
                                f"({', '.join(open_layers[:6])}; {stopped}); rerun with more --iterations or "
                                f"--budget, or fewer --n-queries or --sample, before judging EK-FAC ({numbers} so far, "
                                f"an upper bound).{weak_text}")
    if overall.verdict == "trustworthy":
        return "trustworthy", (f"EK-FAC's inverse-Hessian-vector products match the damped Gauss-Newton solution "
                               f"({numbers}); its influence scores can be read as the paper's.{weak_text}")
    if overall.verdict == "roughly right":
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


def trust_check(model: nn.Module, layers: list[TrackedLayer], reference: Reference, b: torch.Tensor,
                options: CheckOptions, quiet: bool = False, tracked: int | None = None) -> TrustReport:
    """Compare EK-FAC's (G + λI)⁻¹ b with the reference solver's for query gradients b [Q, P], layer by layer, on
    the system ``reference`` describes. ``layers`` are the checked layers (b holds their gradients); ``tracked``
    the run's count, for the report."""
    b = b.to(solver_dtype(b.dtype))  # x, λ and the preconditioner's products in float32 (precision policy)
    layout = Layout.of(layers)
    damping = layout.expand(reference.dampings, b.dtype, b.device)
    G = GaussNewton(model, layers, [s.input_ids for s in reference.sequences], options.batch_size,
                    block_diagonal=True)
    A = damped(G, damping)
    M = curvature_inverse(reference.curvature.layers, layout, reference.dampings, b.device)
    solver = "CG" if options.solver == "cg" else "LiSSA"
    watch = _Watch(solver, options, layout)
    estimate = M(b)
    if options.solver == "cg":
        products = options.iterations * G.products_per_call
    else:  # its power iteration, and the final products for the residual and the energy cosine
        products = (POWER_ITERATIONS + 2) * G.products_per_call + options.iterations * len(layers)
    with progress_bar(products, f"{solver} on {len(layers)} layers: starting", quiet) as bar:
        G.on_product = bar.advance
        watch.bar = bar
        if options.solver == "cg":
            solution = conjugate_gradient(A, b, options.iterations, preconditioner=M, quiet=True,
                                          blocks=layout.sizes, stop=watch)
            rows = _cg_rows(layout, estimate, solution.x, b, watch)
        else:
            bar.describe(f"LiSSA on {len(layers)} layers: largest eigenvalue (power iteration)")
            scale = 1.5 * largest_eigenvalue(A, layout.size, b.dtype, POWER_ITERATIONS, device=b.device)
            solution = lissa(lambda v, step: G.minibatch(v, step) + damping * v, b, scale, options.iterations,
                             quiet=True, stop=watch)
            bar.describe(f"LiSSA on {len(layers)} layers: final residual")
            rows = _lissa_rows(layout, estimate, solution.x, b, A(estimate), A(solution.x))
        bar.finish()
    verdicts = [_verdict(options, r) for r in rows.values()]
    per_layer = [agreement(name, r, v) for (name, r), v in zip(rows.items(), verdicts, strict=True)]
    whole = _joined(rows, layout, options.solver)
    tracked = tracked or len(layers)
    overall = agreement("all layers" if len(layers) == tracked else f"the {len(layers)} checked layers", whole,
                        _overall_word(options, whole, verdicts))
    stopped = watch.reason(solution.iterations)
    word, explanation = overall_verdict(overall, per_layer, stopped)
    return TrustReport(per_layer, overall, options.solver, solution.iterations, word, explanation, stopped,
                       watch.elapsed(), tracked, reference.refitted)


def _verdict(options: CheckOptions, rows: _Rows) -> str:
    """A layer's verdict: from the bound and estimated error (CG), or from a converged residual (LiSSA)."""
    cosine, error = float(rows.energy_cosine.mean()), float(rows.solver_error.max())
    if options.solver == "cg":
        return cg_verdict(cosine, error, options.tolerance)
    return band(cosine) if error <= CONVERGED else "inconclusive"


def _overall_word(options: CheckOptions, whole: _Rows, verdicts: list[str]) -> str:
    """The overall verdict: the joint energy cosine's, as a layer's (a joint bound below ROUGH settles it), and
    "inconclusive" while any layer is."""
    if options.solver == "lissa":
        return "inconclusive" if "inconclusive" in verdicts else band(float(whole.energy_cosine.mean()))
    word = cg_verdict(float(whole.energy_cosine.mean()), float(whole.solver_error.max()), options.tolerance)
    return word if word == "not trustworthy" or "inconclusive" not in verdicts else "inconclusive"


def _cg_rows(layout: Layout, estimate: torch.Tensor, x: torch.Tensor, b: torch.Tensor, watch: _Watch
             ) -> dict[str, _Rows]:
    """Per layer rows from CG: the energy cosine √(bᵀx₁ / bᵀx_k) (x₁ = α x̃: PCG's first step from 0)."""
    energies, residuals = watch.energies, watch.residuals  # [iterations + 1, Q, blocks], [Q, blocks]
    cosine = (energies[1].double() / energies[-1].double().clamp_min(torch.finfo(torch.float64).tiny)).sqrt()
    error = energy_error(energies)
    parts = [layout.split(t) for t in (estimate, x, b)]
    return {name: _Rows(*(p[name].flatten(-2) for p in parts), residuals[:, i], cosine[:, i], error[:, i])
            for i, name in enumerate(layout.names)}


def _lissa_rows(layout: Layout, estimate: torch.Tensor, x: torch.Tensor, b: torch.Tensor, A_estimate: torch.Tensor,
                Ax: torch.Tensor) -> dict[str, _Rows]:
    """Per layer rows from LiSSA: the energy cosine with bᵀx for bᵀA⁻¹b, the residual as its error."""
    parts = [layout.split(t) for t in (estimate, x, b, A_estimate, Ax)]
    rows = {}
    for name in layout.names:
        e, r, bb, Ae, Ar = (p[name].flatten(-2).double() for p in parts)
        residual = (bb - Ar).norm(dim=-1) / bb.norm(dim=-1).clamp_min(torch.finfo(torch.float64).tiny)
        rows[name] = _Rows(e, r, bb, residual, energy_cosine(e, Ae, bb, (bb * r).sum(-1)), residual)
    return rows


def _joined(rows: dict[str, _Rows], layout: Layout, solver: str) -> _Rows:
    """All layers together: their rows side by side, and the joint energy cosine
    Σ_ℓ bᵀx̃ / √(Σ_ℓ x̃ᵀAx̃ · Σ_ℓ bᵀx) (A block-diagonal), from each layer's cosine and energy."""
    parts = list(rows.values())
    estimate, reference, b = (torch.cat([getattr(r, f).double() for r in parts], -1)
                              for f in ("estimate", "reference", "b"))
    cross = torch.stack([(r.b.double() * r.estimate.double()).sum(-1) for r in parts])  # [layers, Q]: bᵀx̃
    energy = torch.stack([(r.b.double() * r.reference.double()).sum(-1) for r in parts])  # bᵀx_k
    tiny = torch.finfo(torch.float64).tiny
    curvature = cross ** 2 / (torch.stack([r.energy_cosine for r in parts]) ** 2 * energy).clamp_min(tiny)  # x̃ᵀAx̃
    cosine = cross.sum(0) / (curvature.sum(0) * energy.sum(0)).clamp_min(tiny).sqrt()
    residual = torch.stack([r.residual * r.b.double().norm(dim=-1) for r in parts]).norm(dim=0) / b.norm(dim=-1)
    error = torch.stack([r.solver_error for r in parts]).max(0).values
    return _Rows(estimate, reference, b, residual, cosine, error)


POWER_ITERATIONS = 20  # LiSSA's scale: 1.5 × A's largest eigenvalue, by power iteration


class _Watch:
    """Asked after each solver iteration: shows it on the progress bar, stops once every layer is settled (CG) or
    at the budget; keeps the last residuals and the energies."""

    def __init__(self, name: str, options: CheckOptions, layout: Layout) -> None:
        self.name, self.options, self.layout, self.start = name, options, layout, time.perf_counter()
        self.bar: Bar | None = None
        self.settled = self.out_of_time = False
        self.residuals = self.energies = torch.empty(0)

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def __call__(self, iteration: int, residuals: torch.Tensor, energies: torch.Tensor) -> bool:
        self.residuals, self.energies = residuals, energies
        shown = ""
        if self.name == "CG":
            cosines = (energies[1].double() / energies[-1].double().clamp_min(torch.finfo(torch.float64).tiny)).sqrt()
            errors = energy_error(energies)
            words = [settled(float(c), float(e), self.options.tolerance)
                     for c, e in zip(cosines.mean(0), errors.max(0).values, strict=True)]
            self.settled = all(w is not None for w in words)
            shown = f", {sum(w is not None for w in words)} of {len(words)} layers settled, largest error " \
                    f"{float(errors.max()):.2g}"
        self.out_of_time = self.options.budget is not None and self.elapsed() > self.options.budget
        if self.bar is not None:
            self.bar.describe(f"{self.name} iteration {iteration}/{self.options.iterations}{shown}")
            self.bar.note(f"{self.name} iteration {iteration}/{self.options.iterations}{shown} "
                          f"({self.elapsed():.0f} s)")
        return self.settled or self.out_of_time

    def reason(self, iterations: int) -> str:
        """Why the solver stopped, in words."""
        if self.settled:
            return (f"settled every layer after {iterations} iterations (converged to an estimated energy-norm "
                    f"error below {self.options.tolerance}, or bounded below {ROUGH})")
        if self.out_of_time:
            return (f"stopped after {iterations} of {self.options.iterations} iterations: the --budget of "
                    f"{self.options.budget:g} s ran out")
        return f"ran all {iterations} iterations"
