"""Fit each tracked layer's curvature by streaming the corpus: the passes each strategy needs, and nothing more.

- ekfac: covariance pass (A, S) → float64 eigendecompositions → eigenvalue-correction pass (Λ).
- kfac: covariance pass → eigendecompositions; Λ = τ·(Λ_S ⊗ Λ_A), τ = mean predicting tokens per sequence.
- diagonal: one pass for diag(G) = E_seq[DW̄∘2].
- identity: no pass (gradient dot product).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import nn

from wherefrom.curvature.correction import CorrectionAccumulator
from wherefrom.curvature.covariance import CovarianceAccumulator
from wherefrom.curvature.eigen import eigendecompose
from wherefrom.curvature.preconditioner import LayerCurvature
from wherefrom.data.corpus import TrainingSequence
from wherefrom.engine.distributed import World
from wherefrom.engine.passes import Checkpoints, PassPlan, run_pass
from wherefrom.engine.stream import Labels
from wherefrom.models.selection import TrackedLayer
from wherefrom.options import FitOptions
from wherefrom.progress import track

Eigen = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]  # Λ_A, Q_A, Λ_S, Q_S


@dataclass
class FittedCurvature:
    """The result of `fit`: per-layer curvature and the counts it was estimated from."""

    layers: Mapping[str, LayerCurvature]  # a dict after fitting; read layer by layer from disk after loading
    n_sequences: int
    n_tokens: int


def fit_curvature(model: nn.Module, layers: list[TrackedLayer], sequences: list[TrainingSequence],
                  options: FitOptions, quiet: bool = False, checkpoints: Checkpoints | None = None,
                  world: World | None = None) -> FittedCurvature:
    """Run the passes of ``options.strategy`` over ``sequences`` and return every layer's curvature."""
    checkpoints = checkpoints or Checkpoints(None, "")
    world = world or World()
    dtype = next(model.parameters()).dtype
    labels = Labels("sampled" if options.fisher == "sampled" else "data", options.seed)
    plan = PassPlan([s.input_ids for s in sequences], [1] * len(sequences), options.batch_size, options.shard_size)
    n_tokens = sum(len(s.input_ids) - 1 for s in sequences)  # predicting tokens
    shapes = {layer.name: (layer.shape.out_features, layer.shape.in_dim) for layer in layers}

    def result(curvature: dict[str, LayerCurvature]) -> FittedCurvature:
        return FittedCurvature(curvature, len(sequences), n_tokens)

    if options.strategy == "identity":
        return result({layer.name: LayerCurvature(None, None, None) for layer in layers})
    if options.strategy == "diagonal":
        diagonal = run_pass(model, layers, plan, labels, "diagonal", "diagonal of G",
                            lambda: CorrectionAccumulator({n: (None, None) for n in shapes}, shapes, dtype),
                            checkpoints, world, quiet)
        return result({name: LayerCurvature(None, None, lam) for name, lam in diagonal.eigenvalues().items()})

    covariance = run_pass(model, layers, plan, labels, "covariance", "covariances A, S",
                          lambda: CovarianceAccumulator(layers, dtype), checkpoints, world, quiet)
    eigen = eigendecompose_all(covariance, world, dtype, quiet)
    if options.strategy == "kfac":
        tau = covariance.n_tokens / covariance.n_sequences
        return result({name: LayerCurvature(Q_A, Q_S, (tau * torch.outer(lam_S, lam_A)).to(dtype))
                       for name, (lam_A, Q_A, lam_S, Q_S) in eigen.items()})
    bases = {name: (Q_A, Q_S) for name, (_, Q_A, _, Q_S) in eigen.items()}
    correction = run_pass(model, layers, plan, labels, "correction", "eigenvalue correction Λ",
                          lambda: CorrectionAccumulator(bases, shapes, dtype), checkpoints, world, quiet)
    return result({name: LayerCurvature(eigen[name][1], eigen[name][3], lam)
                   for name, lam in correction.eigenvalues().items()})


def eigendecompose_all(covariance: CovarianceAccumulator, world: World, dtype: torch.dtype,
                       quiet: bool) -> dict[str, Eigen]:
    """(Λ_A, Q_A, Λ_S, Q_S) per layer, each layer decomposed on one rank (round-robin) and shared by summing.

    Eigendecompositions run in float64; the bases are then kept in the model's dtype (they only rotate).
    Covariances are freed layer by layer. A layer whose A equals the previous layer's (gate_proj and up_proj read
    the same input) reuses that decomposition, and both layers share one basis tensor.
    """
    names = list(covariance.names)
    mine = [name for index, name in enumerate(names) if world.owns(index)]
    eigen: dict[str, Eigen] = {}
    previous_A: tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]] | None = None
    for name in track(mine, len(mine), "eigendecompositions", quiet or not world.is_main):
        A, S = covariance.pop(name)
        if previous_A is not None and previous_A[0].shape == A.shape and torch.equal(previous_A[0], A):
            lam_A, Q_A = previous_A[1]
        else:
            lam_A, Q_A = eigendecompose(name, "A", A)
            Q_A = Q_A.to(dtype)
            previous_A = (A, (lam_A, Q_A))
        lam_S, Q_S = eigendecompose(name, "S", S)
        eigen[name] = (lam_A, Q_A, lam_S, Q_S.to(dtype))
    if world.size == 1:
        return eigen
    shared = {}
    for name in names:  # zeros on the ranks that do not own the layer; one all-reduce shares every result
        layer = next(layer for layer in covariance.layers if layer.name == name)
        n_in, n_out = layer.shape.in_dim, layer.shape.out_features
        parts = eigen.get(name) or (torch.zeros(n_in, dtype=torch.float64), torch.zeros(n_in, n_in, dtype=dtype),
                                    torch.zeros(n_out, dtype=torch.float64), torch.zeros(n_out, n_out, dtype=dtype))
        shared.update({f"{name}/{i}": p.contiguous().clone() for i, p in enumerate(parts)})
    world.sum(shared)
    return {name: tuple(shared[f"{name}/{i}"] for i in range(4)) for name in names}
