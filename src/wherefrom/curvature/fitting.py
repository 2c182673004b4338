"""Fit each tracked layer's curvature by streaming the corpus: the passes each strategy needs, and nothing more.

- ekfac: covariance pass (A, S) → float64 eigendecompositions → eigenvalue-correction pass (Λ).
- kfac: covariance pass → eigendecompositions; Λ = τ·(Λ_S ⊗ Λ_A), τ = mean predicting tokens per sequence.
- diagonal: one pass for diag(G) = E_seq[DW̄∘2].
- identity: no pass (gradient dot product).

With ``factor_blocks`` O > 1 (kfac, ekfac) A and S are block-diagonal with O blocks each (appendix A).

Precision policy: the passes run in the model's dtype and sum A, S, Λ in float32 (the execution's accumulation
dtype); eigendecompositions run in float64; the bases Q_A, Q_S and Λ are kept in float32.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import torch
from torch import nn

from wherefrom.allocator import release_free_heap
from wherefrom.curvature.blocks import Basis, basis_from_tensors, basis_tensors, block_sizes, check_factor_blocks
from wherefrom.curvature.correction import CorrectionAccumulator
from wherefrom.curvature.covariance import CovarianceAccumulator
from wherefrom.curvature.eigen import Factor, eigendecompose_each
from wherefrom.curvature.preconditioner import LayerCurvature
from wherefrom.data.corpus import TrainingSequence
from wherefrom.engine.distributed import World
from wherefrom.engine.execution import Execution
from wherefrom.engine.passes import Checkpoints, PassPlan, run_pass
from wherefrom.engine.stream import Labels
from wherefrom.models.selection import TrackedLayer
from wherefrom.options import FitOptions
from wherefrom.progress import track

Eigen = tuple[torch.Tensor, Basis, torch.Tensor, Basis]  # Λ_A, Q_A, Λ_S, Q_S


@dataclass
class FittedCurvature:
    """The result of `fit`: per-layer curvature and the counts it was estimated from."""

    layers: Mapping[str, LayerCurvature]  # a dict after fitting; read layer by layer from disk after loading
    n_sequences: int
    n_tokens: int


def fit_curvature(model: nn.Module, layers: list[TrackedLayer], sequences: list[TrainingSequence],
                  options: FitOptions, quiet: bool = False, checkpoints: Checkpoints | None = None,
                  execution: Execution | None = None) -> FittedCurvature:
    """Run the passes of ``options.strategy`` over ``sequences`` and return every layer's curvature (default
    execution: where ``model`` is, one process)."""
    checkpoints = checkpoints or Checkpoints(None, "")
    execution = execution or Execution.of(model)
    world, dtype = execution.world, execution.accumulation_dtype
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
                            lambda: CorrectionAccumulator({n: (None, None) for n in shapes}, shapes, execution),
                            checkpoints, execution, quiet, save_last=False)
        return result({name: LayerCurvature(None, None, lam) for name, lam in diagonal.eigenvalues().items()})

    check_factor_blocks(layers, options.factor_blocks)
    covariance = run_pass(model, layers, plan, labels, "covariance", "covariances A, S",
                          lambda: CovarianceAccumulator(layers, execution, options.factor_blocks), checkpoints, execution,
                          quiet)
    release_free_heap()  # the pass's activations, freed in the heap, need not stay resident while the bases are formed
    eigen = eigendecompose_all(covariance, world, dtype, quiet)
    if options.strategy == "kfac":
        tau = covariance.n_tokens / covariance.n_sequences
        return result({name: LayerCurvature(Q_A, Q_S, (tau * torch.outer(lam_S, lam_A)).to(dtype))
                       for name, (lam_A, Q_A, lam_S, Q_S) in eigen.items()})
    bases = {name: (Q_A, Q_S) for name, (_, Q_A, _, Q_S) in eigen.items()}
    correction = run_pass(model, layers, plan, labels, "correction", "eigenvalue correction Λ",
                          lambda: CorrectionAccumulator(bases, shapes, execution), checkpoints, execution, quiet,
                          save_last=False)
    return result({name: LayerCurvature(eigen[name][1], eigen[name][3], lam)
                   for name, lam in correction.eigenvalues().items()})


def eigendecompose_all(covariance: CovarianceAccumulator, world: World, dtype: torch.dtype,
                       quiet: bool) -> dict[str, Eigen]:
    """(Λ_A, Q_A, Λ_S, Q_S) per layer, each layer decomposed on one rank (round-robin) and shared by summing.

    Eigendecompositions run in float64, block by block, where the sums are; the bases are then kept in ``dtype``
    (float32, the accumulation dtype: the preconditioned query gradients are formed with them). Covariances are
    freed layer by layer. A layer whose A equals the previous layer's (gate_proj and up_proj read the same input)
    reuses that decomposition, and both layers share one basis.
    """
    names = list(covariance.names)
    mine = [name for index, name in enumerate(names) if world.owns(index)]
    shares_A = covariance.shared_inputs(mine)

    def factors() -> Iterator[Factor]:  # popped layer by layer, as the decompositions in flight need them
        for name in mine:
            A, S = covariance.pop(name)
            if name not in shares_A:
                yield from _labelled(name, "A", A)
            yield from _labelled(name, "S", S)

    decomposed = eigendecompose_each(factors(), dtype, divisor=float(covariance.n_tokens))  # A = Σ ā āᵀ / n_tokens
    eigen: dict[str, Eigen] = {}
    for name in track(mine, len(mine), "eigendecompositions", quiet or not world.is_main):
        A_blocks, S_blocks = (len(covariance.slices[f"{factor}/{name}"]) for factor in ("A", "S"))
        parts = [next(decomposed) for _ in range(S_blocks if name in shares_A else A_blocks + S_blocks)]
        lam_A, Q_A = eigen[shares_A[name]][:2] if name in shares_A else _joined(parts[:A_blocks])
        eigen[name] = (lam_A, Q_A, *_joined(parts[-S_blocks:]))
    release_free_heap()  # the workers' float64 copies and LAPACK workspaces, freed in their heaps
    if world.size == 1:
        return eigen
    shared, counts = {}, {}
    for name in names:  # zeros on the ranks that do not own the layer; one all-reduce shares every result
        layer = next(layer for layer in covariance.layers if layer.name == name)
        parts = _flatten(eigen[name]) if name in eigen else _zeros(
            [block_sizes(layer.shape.in_dim, len(covariance.slices[f"A/{name}"])),
             block_sizes(layer.shape.out_features, len(covariance.slices[f"S/{name}"]))], dtype,
            covariance.sums["n_tokens"].device)
        shared.update({f"{name}/{i}": p.contiguous().clone() for i, p in enumerate(parts)})
        counts[name] = len(parts)
    world.sum(shared)
    return {name: _unflatten([shared[f"{name}/{i}"] for i in range(counts[name])]) for name in names}


def _labelled(name: str, factor: str, blocks: list[torch.Tensor]) -> Iterator[Factor]:
    """A factor's diagonal blocks, each named for the errors that may come of it."""
    for i, block in enumerate(blocks):
        yield name, factor if len(blocks) == 1 else f"{factor} block {i}", block


def _joined(parts: list[tuple[torch.Tensor, torch.Tensor]]) -> tuple[torch.Tensor, Basis]:
    """Eigenvalues (the blocks' in order) and the block-diagonal basis of a factor from its blocks' decompositions."""
    return torch.cat([values for values, _ in parts]), basis_from_tensors([Q for _, Q in parts])


def _flatten(eigen: Eigen) -> list[torch.Tensor]:
    """Λ_A, Λ_S, then the blocks of Q_A and of Q_S: the tensors one all-reduce sums."""
    lam_A, Q_A, lam_S, Q_S = eigen
    return [lam_A, lam_S, *basis_tensors(Q_A), *basis_tensors(Q_S)]


def _zeros(sizes: list[list[int]], dtype: torch.dtype, device: torch.device) -> list[torch.Tensor]:
    """A placeholder of :func:`_flatten`'s layout for factors with these block sizes."""
    values = [torch.zeros(sum(s), dtype=torch.float64, device=device) for s in sizes]
    return values + [torch.zeros(n, n, dtype=dtype, device=device) for s in sizes for n in s]


def _unflatten(parts: list[torch.Tensor]) -> Eigen:
    lam_A, lam_S, bases = parts[0], parts[1], parts[2:]
    n_A = _count_blocks(bases, lam_A.numel())
    return lam_A, basis_from_tensors(bases[:n_A]), lam_S, basis_from_tensors(bases[n_A:])


def _count_blocks(bases: list[torch.Tensor], dim: int) -> int:
    """How many of the leading square blocks cover ``dim`` coordinates."""
    covered, count = 0, 0
    while covered < dim:
        covered += bases[count].shape[0]
        count += 1
    return count
