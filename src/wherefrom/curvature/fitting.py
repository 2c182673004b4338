"""Fit each tracked layer's curvature by streaming the corpus: the passes each strategy needs, and nothing more.

- ekfac: covariance pass (A, S) → float64 eigendecompositions → eigenvalue-correction pass (Λ).
- kfac: covariance pass → eigendecompositions; Λ = τ·(Λ_S ⊗ Λ_A), τ = mean tokens per sequence.
- diagonal: one pass for diag(G) = E_seq[DW̄∘2].
- identity: no pass (gradient dot product).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from wherefrom.curvature.correction import CorrectionAccumulator
from wherefrom.curvature.covariance import CovarianceAccumulator
from wherefrom.curvature.eigen import eigendecompose
from wherefrom.curvature.preconditioner import LayerCurvature
from wherefrom.data.batching import make_batches
from wherefrom.data.corpus import TrainingSequence
from wherefrom.engine.stream import Labels, StreamBatch, stream
from wherefrom.models.selection import TrackedLayer
from wherefrom.options import FitOptions
from wherefrom.progress import track


@dataclass
class FittedCurvature:
    """The result of `fit`: per-layer curvature and the counts it was estimated from."""

    layers: dict[str, LayerCurvature]
    n_sequences: int
    n_tokens: int


def fit_curvature(model: nn.Module, layers: list[TrackedLayer], sequences: list[TrainingSequence],
                  options: FitOptions, quiet: bool = False) -> FittedCurvature:
    """Run the passes of ``options.strategy`` over ``sequences`` and return every layer's curvature."""
    dtype = next(model.parameters()).dtype
    labels = Labels("sampled" if options.fisher == "sampled" else "data", options.seed)
    n_tokens = sum(len(s.input_ids) - 1 for s in sequences)  # predicting tokens

    def run(consumer: Callable[[StreamBatch], None], description: str) -> None:
        token_lists = [s.input_ids for s in sequences]
        batches = make_batches(token_lists, [1] * len(sequences), options.batch_size)
        n_batches = -(-len(sequences) // options.batch_size)
        for item in stream(model, layers, batches, n_batches, labels, description, quiet):
            consumer(item)

    if options.strategy == "identity":
        curvature = {l.name: LayerCurvature(None, None, None) for l in layers}
        return FittedCurvature(curvature, len(sequences), n_tokens)
    shapes = {l.name: (l.shape.out_features, l.shape.in_dim) for l in layers}
    if options.strategy == "diagonal":
        diagonal = CorrectionAccumulator({name: (None, None) for name in shapes}, shapes, dtype)
        run(diagonal.update, "diagonal of G")
        curvature = {name: LayerCurvature(None, None, lam) for name, lam in diagonal.eigenvalues().items()}
        return FittedCurvature(curvature, len(sequences), n_tokens)

    covariance = CovarianceAccumulator(layers)
    run(covariance.update, "covariances A, S")
    eigen = _eigendecompose_all(covariance.covariances(), quiet)
    if options.strategy == "kfac":
        tau = covariance.n_tokens / covariance.n_sequences
        curvature = {name: LayerCurvature(Q_A, Q_S, tau * torch.outer(lam_S, lam_A))
                     for name, (lam_A, Q_A, lam_S, Q_S) in eigen.items()}
        return FittedCurvature(curvature, len(sequences), n_tokens)
    correction = CorrectionAccumulator({name: (Q_A, Q_S) for name, (_, Q_A, _, Q_S) in eigen.items()}, shapes,
                                       dtype)
    run(correction.update, "eigenvalue correction Λ")
    curvature = {name: LayerCurvature(eigen[name][1], eigen[name][3], lam)
                 for name, lam in correction.eigenvalues().items()}
    return FittedCurvature(curvature, len(sequences), n_tokens)


def _eigendecompose_all(covariances: dict[str, tuple[torch.Tensor, torch.Tensor]], quiet: bool
                        ) -> dict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]]:
    """(Λ_A, Q_A, Λ_S, Q_S) per layer; identical factors (layers sharing an input) are decomposed once."""
    done: dict[tuple[object, ...], tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]] = {}

    def decompose(name: str, factor: str, matrix: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        key = (tuple(matrix.shape), float(matrix.sum()), float(matrix.diagonal().sum()))
        if key in done and torch.equal(done[key][0], matrix):
            return done[key][1]
        done[key] = (matrix, eigendecompose(name, factor, matrix))
        return done[key][1]

    eigen = {}
    for name, (A, S) in track(covariances.items(), len(covariances), "eigendecompositions", quiet):
        eigen[name] = (*decompose(name, "A", A), *decompose(name, "S", S))
    return eigen
