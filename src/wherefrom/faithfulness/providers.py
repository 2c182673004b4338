"""Score providers: each method compared by the LDS, as a name and a way to compute its score matrix [Q, N]
of the queries against the explained model's full training corpus. Adding a method is one entry in :data:`PROVIDERS`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from wherefrom.api import fit, score
from wherefrom.curvature.store import load_run
from wherefrom.index import build_index
from wherefrom.options import ExecutionOptions, FitOptions, IndexOptions, ScoreOptions, Strategy


@dataclass(frozen=True)
class ScoringContext:
    """The explained model and its data, and where fitted runs and score folders are kept between runs."""

    model_dir: Path
    corpus: Path
    queries: Path
    work: Path
    max_length: int  # tokens per training sequence and query
    batch_size: int = 32  # sequences per pass of fit, index and score (the demo pipeline's)
    modules: str = "mlp"  # the tracked layers (a LoRA model: its adapters' layers among them)
    quiet: bool = False
    execution: ExecutionOptions = ExecutionOptions()  # where fit, index and score run the model

    def scores_folder(self, label: str, damping: float | None) -> Path:
        """Where the scores of method ``label`` at ``damping`` (None: its default) are kept."""
        return self.work / f"scores-{label}-damping-{'default' if damping is None else f'{damping:.6g}'}"


ScoreFunction = Callable[[ScoringContext, float | None], np.ndarray]


@dataclass(frozen=True)
class ScoreProvider:
    """A method: its name, a one-line description, and its scores given a context and an absolute damping
    (None: the method's default)."""

    name: str
    description: str
    scores: ScoreFunction


def fitted_run(context: ScoringContext, strategy: Strategy) -> Path:
    """The explained model's curvature for ``strategy`` on its full corpus (fitted once, then reused)."""
    run = context.work / f"run-{strategy}"
    fit(context.model_dir, context.corpus, run, FitOptions(strategy=strategy, max_length=context.max_length,
                                                           batch_size=context.batch_size, modules=context.modules),
        context.quiet, execution=context.execution)
    return run


def curvature_scores(strategy: Strategy, label: str | None = None, index: bool = False, **options: Any
                     ) -> ScoreFunction:
    """Scores from ``wherefrom.fit``/``score`` with this curvature strategy and score ``options`` (query rank,
    refinement), or from a gradient index of the run at its default budget when ``index`` (give rescore=0 for the
    index's own scores of every sequence)."""

    def compute(context: ScoringContext, damping: float | None) -> np.ndarray:
        run = fitted_run(context, strategy)
        folder = None
        if index:
            folder = context.work / f"index-{strategy}"
            build_index(run, folder, options=IndexOptions(max_length=context.max_length, batch_size=context.batch_size),
                        quiet=context.quiet, execution_options=context.execution)
        settings = ScoreOptions(max_length=context.max_length, batch_size=context.batch_size, damping=damping,
                                **options)
        return score(run, context.queries, out=context.scores_folder(label or strategy, damping), options=settings,
                     quiet=context.quiet, index=folder, execution=context.execution).scores.cpu().numpy()

    return compute


def mean_eigenvalue(run: Path) -> float:
    """Mean over tracked layers of each layer's mean eigenvalue mean(Λ_ℓ) (the default λ_ℓ is 0.1 × mean(Λ_ℓ))."""
    layers = load_run(run).curvature.layers
    return float(np.mean([float(layers[name].eigenvalues.mean()) for name in layers]))


PROVIDERS: dict[str, ScoreProvider] = {p.name: p for p in (
    ScoreProvider("identity", "gradient dot product, no curvature", curvature_scores("identity")),
    ScoreProvider("diagonal", "diagonal Gauss-Newton Hessian", curvature_scores("diagonal")),
    ScoreProvider("kfac", "K-FAC", curvature_scores("kfac")),
    ScoreProvider("ekfac", "EK-FAC (eigenvalue-corrected K-FAC)", curvature_scores("ekfac")),
    ScoreProvider("ekfac-rank-8", "EK-FAC, query gradients kept at rank 8 (query batching)",
                  curvature_scores("ekfac", "ekfac-rank8", query_rank=8)),
    ScoreProvider("ekfac+cg", "EK-FAC query vectors refined by 10 conjugate-gradient steps on the damped GGN of "
                  "64 sampled sequences (--refine cg)", curvature_scores("ekfac", "ekfac-cg", refine="cg")),
    ScoreProvider("index", "EK-FAC from the gradient index at its default budget (wherefrom index)",
                  curvature_scores("ekfac", "ekfac-index", index=True, rescore=0)),
)}
SWEPT = "ekfac"  # the method whose damping the sweep varies
