"""The system `check` solves both ways: G on a set of sequences, the curvature fitted on those same sequences, and
the run's damping λ_ℓ (like with like, issue 19).

EK-FAC approximates G over the sequences it was fitted on. The Gauss-Newton Hessian of a smaller sample is a
different matrix: its inverse, (G_sample + λI)⁻¹, is 1/λ in every direction the sample does not reach, whatever
the fitted corpus says there. So the run's factors are compared with the exact solve only when the sample is the
whole fitted corpus; otherwise the curvature is fitted again, with the run's options (strategy, Fisher, seed,
factor blocks), on exactly the sampled sequences, and both sides use the run's λ_ℓ (what scoring uses).
"""

from __future__ import annotations

from dataclasses import dataclass, fields

from torch import nn

from wherefrom.curvature.fitting import FittedCurvature, fit_curvature
from wherefrom.data.corpus import TrainingSequence
from wherefrom.models.selection import TrackedLayer
from wherefrom.options import FitOptions
from wherefrom.solvers.layout import Layout
from wherefrom.solvers.preconditioned import layer_dampings
from wherefrom.solvers.sample import sample_sequences


@dataclass
class Reference:
    """G's sequences, the curvature fitted on exactly them, each layer's λ_ℓ, and whether the run's own factors
    are used (the sample is the whole fitted corpus) or a fit on the sample."""

    sequences: list[TrainingSequence]
    curvature: FittedCurvature
    dampings: dict[str, float]
    refitted: bool


def fit_options_of(fitted: dict, batch_size: int) -> FitOptions:
    """The run's fit options from its manifest's ``options``, with ``batch_size``."""
    known = {f.name for f in fields(FitOptions)}
    return FitOptions(**{**{k: v for k, v in fitted.items() if k in known}, "batch_size": batch_size})


def like_with_like(model: nn.Module, layers: list[TrackedLayer], run: FittedCurvature, fitted: FitOptions,
                   sequences: list[TrainingSequence], sample: int, damping: float | None, whole_corpus: bool,
                   quiet: bool = False) -> Reference:
    """The reference system for the checked ``layers``: G on ``sample`` of ``sequences`` (seeded), the run's
    curvature when that sample is the fitted corpus itself (``whole_corpus``: ``sequences`` are the run's), else
    the curvature fitted anew on the sample with the run's options; λ_ℓ the run's (``damping``: one for all)."""
    chosen = sample_sequences(sequences, sample)
    dampings = layer_dampings(run.layers, Layout.of(layers), damping)
    if whole_corpus and len(chosen) == len(sequences):  # CheckInputs.refits says the same
        return Reference(chosen, run, dampings, refitted=False)
    curvature = fit_curvature(model, layers, chosen, fitted, quiet=quiet)
    return Reference(chosen, curvature, dampings, refitted=True)
