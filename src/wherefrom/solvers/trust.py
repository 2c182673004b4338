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
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from wherefrom.curvature.fitting import FittedCurvature
from wherefrom.data.corpus import TrainingSequence
from wherefrom.models.selection import TrackedLayer
from wherefrom.options import DataOptions, option
from wherefrom.solvers.ggn import GaussNewton
from wherefrom.solvers.iterative import conjugate_gradient, damped, largest_eigenvalue, lissa
from wherefrom.solvers.layout import Layout
from wherefrom.solvers.preconditioned import curvature_inverse, layer_dampings
from wherefrom.solvers.sample import sample_sequences

TRUSTWORTHY, ROUGH, CONVERGED = 0.9, 0.7, 0.1  # cosine thresholds and the reference's largest residual


@dataclass(frozen=True)
class CheckOptions(DataOptions):
    """Options of `check`: the reference solver and the sample it works on."""

    solver: Literal["cg", "lissa"] = option(
        "cg", "Reference solver: 'cg' (conjugate gradient preconditioned by EK-FAC) or 'lissa' (no preconditioner).")
    iterations: int = option(30, "Iterations of the reference solver.")
    sample: int = option(32, "Corpus sequences (a seeded sample) on which the Gauss-Newton Hessian is formed.")
    n_queries: int = option(4, "Without --queries: this many corpus sequences' own gradients serve as queries.")
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
    iterations: int
    verdict: str
    explanation: str


def agreement(name: str, estimate: torch.Tensor, reference: torch.Tensor, b: torch.Tensor, Ax: torch.Tensor
              ) -> Agreement:
    """Relative error, cosine and residual of rows [Q, n] (one layer's block, or everything)."""
    tiny = torch.finfo(torch.float64).tiny
    estimate, reference, b, Ax = (t.double() for t in (estimate, reference, b, Ax))
    error = (estimate - reference).norm(dim=-1) / reference.norm(dim=-1).clamp_min(tiny)
    cosine = (estimate * reference).sum(-1) / (estimate.norm(dim=-1) * reference.norm(dim=-1)).clamp_min(tiny)
    residual = (b - Ax).norm(dim=-1) / b.norm(dim=-1).clamp_min(tiny)
    return Agreement(name, float(error.mean()), float(cosine.mean()), float(residual.max()))


def verdict(overall: Agreement, layers: list[Agreement]) -> tuple[str, str]:
    """("trustworthy" | "roughly right" | "not trustworthy" | "inconclusive", an explanation with the numbers)."""
    weak = [a.name for a in layers if a.cosine < ROUGH]
    numbers = f"cosine {overall.cosine:.3f}, relative error {overall.relative_error:.3f}"
    if overall.residual > CONVERGED:
        return "inconclusive", (f"the iterative solver has not converged (relative residual {overall.residual:.2g} > "
                                f"{CONVERGED}); rerun with more --iterations or a larger --sample before judging "
                                f"EK-FAC ({numbers} so far).")
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


def trust_check(model: nn.Module, layers: list[TrackedLayer], curvature: FittedCurvature, b: torch.Tensor,
                sequences: list[TrainingSequence], options: CheckOptions, quiet: bool = False) -> TrustReport:
    """Compare EK-FAC's (G + λI)⁻¹ b with the reference solver's for query gradients b [Q, P], layer by layer."""
    layout = Layout.of(layers)
    dampings = layer_dampings(curvature.layers, layout, options.damping)
    G = GaussNewton(model, layers, [s.input_ids for s in sample_sequences(sequences, options.sample)],
                    options.batch_size, block_diagonal=True)
    A = damped(G, layout.expand(dampings, b.dtype, b.device))
    M = curvature_inverse(curvature.layers, layout, dampings, b.device)
    if options.solver == "cg":
        x = conjugate_gradient(A, b, options.iterations, preconditioner=M, quiet=quiet).x
    else:
        damping = layout.expand(dampings, b.dtype, b.device)
        scale = 1.5 * largest_eigenvalue(A, layout.size, b.dtype, device=b.device)
        x = lissa(lambda v, step: G.minibatch(v, step) + damping * v, b, scale, options.iterations, quiet=quiet).x
    estimate, Ax = M(b), A(x)
    parts = [layout.split(t) for t in (estimate, x, b, Ax)]
    per_layer = [agreement(name, *(p[name].flatten(-2) for p in parts)) for name in layout.names]
    overall = agreement("all layers", estimate, x, b, Ax)
    word, explanation = verdict(overall, per_layer)
    return TrustReport(per_layer, overall, options.solver, options.iterations, word, explanation)
