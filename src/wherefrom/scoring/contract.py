"""Contract training sequences' activity with preconditioned query gradients (Grosse et al. eq. 30-31).

For a layer with preconditioned query gradient V = (G + λI)⁻¹ ∇L_q and a training sequence with inputs ā_t and
output gradients Ds_t, the influence is ⟨V, Σ_t Ds_t ā_tᵀ⟩ = Σ_t Ds_tᵀ V ā_t: the per-token terms are the
token decomposition, the per-layer terms the layer decomposition. Per-example gradients are formed only when
that is cheaper than the contraction (many queries, no per-token scores).

Precision policy: the preconditioned query gradients arrive in float32 and are cast once to the model's dtype;
each layer's contraction runs in the model's dtype (ā, Ds are in it), and a batch's scores are summed over
layers in float64 and kept on the host in float64.
"""

from __future__ import annotations

import torch

from wherefrom.allocator import Workspace
from wherefrom.curvature.preconditioner import LayerCurvature
from wherefrom.data.batching import Batch
from wherefrom.engine.execution import Execution
from wherefrom.engine.passes import Accumulator
from wherefrom.engine.stream import LayerBatch, sequence_products
from wherefrom.models.units import UnitMap
from wherefrom.scoring.lowrank import LowRankQueries
from wherefrom.scoring.unit_totals import UnitTotals
from wherefrom.scoring.units import layer_split, split_layout, to_units, token_terms


class ScoreAccumulator(Accumulator):
    """Consumes the stream of training sequences, layer by layer, and fills the score matrix and its
    decompositions (on the host)."""

    def __init__(self, queries: dict[str, torch.Tensor | LowRankQueries], n_queries: int, n_sequences: int,
                 per_layer: bool, token_offsets: torch.Tensor | None,
                 self_curvature: dict[str, tuple[LayerCurvature, float | None]] | None,
                 execution: Execution, units: UnitMap | None = None, unit_keep: int = 0) -> None:
        self.queries = {name: _on(V, execution) for name, V in queries.items()}
        self.units = units
        self.unit_totals = None if units is None else UnitTotals(n_queries, len(units), unit_keep, execution.world)
        if units is not None:  # the unit split needs V entry by entry
            self.queries = {name: V.dense() if name in units.layers and isinstance(V, LowRankQueries) else V
                            for name, V in self.queries.items()}
        self.split_queries = {} if units is None else {
            name: split_layout(self.queries[name], part.axis) for name, part in units.layers.items()
            if name in self.queries}
        self.layer_index = {name: i for i, name in enumerate(queries)}
        self.per_layer = per_layer
        self.scores = torch.zeros(len(queries) if per_layer else 1, n_queries, n_sequences, dtype=torch.float64)
        self.token_offsets = token_offsets
        self.dtype = execution.accumulation_dtype
        self.per_token = None if token_offsets is None else torch.zeros(n_queries, int(token_offsets[-1]),
                                                                          dtype=self.dtype)
        self.self_curvature = None if self_curvature is None else {
            name: (curvature.to(execution.device), damping) for name, (curvature, damping) in self_curvature.items()}
        self.self_influence = None if self_curvature is None else torch.zeros(n_sequences, dtype=torch.float64)
        self.device = execution.device
        self.workspace = Workspace(execution.device)
        self.seen = (n_sequences, 0)  # the contiguous range of rows this accumulator has scored
        self._batch: Batch | None = None
        self._scores = self._self_influence = self._tokens = self._unit_split = None  # the batch's, on the device

    def begin(self, batch: Batch) -> None:
        rows = batch.rows
        self.seen = (min(self.seen[0], int(rows.min())), max(self.seen[1], int(rows.max()) + 1))
        self._batch = batch
        shape = (self.scores.shape[0], self.scores.shape[1], rows.numel())
        self._scores = torch.zeros(shape, dtype=torch.float64, device=self.device)
        self._self_influence = None if self.self_influence is None else torch.zeros(
            rows.numel(), dtype=torch.float64, device=self.device)
        self._unit_split = None if self.units is None else torch.zeros(
            *shape[1:], len(self.units), dtype=torch.float64, device=self.device)
        self._tokens = None

    def layer(self, name: str, layer: LayerBatch) -> None:
        """Add one layer's part of the batch's scores."""
        V = self.queries[name]
        if self._unit_split is not None and name in self.units.layers:
            tokens, scores = self._split_into_units(name, V, layer, self._unit_split)
        elif self.per_token is not None or (isinstance(V, LowRankQueries) and _low_rank_is_cheaper(V, layer)):
            tokens = token_contributions(V, layer)  # [Q, B, T]
            scores = tokens.sum(-1)
        else:
            tokens, scores = None, sequence_scores(V, layer, self.workspace)
        if tokens is not None:
            self._tokens = tokens.to(self.dtype) if self._tokens is None else self._tokens + tokens
        self._scores[self.layer_index[name] if self.per_layer else 0] += scores.double()
        if self._self_influence is not None:
            curvature, damping = self.self_curvature[name]
            self._self_influence += self_influence(curvature, damping, layer.output_grads, layer.inputs,
                                                   self.workspace)

    def end(self, loss: torch.Tensor) -> None:
        """Move the batch's scores to the host."""
        rows = self._batch.rows
        batch_scores = self._scores.cpu()
        self.scores[:, :, rows] += batch_scores
        if self.self_influence is not None:
            self.self_influence[rows] += self._self_influence.cpu()
        if self.per_token is not None and self._tokens is not None:
            self._store_tokens(rows, self._batch.attention_mask.sum(1).cpu(), self._tokens.cpu())
        if self.unit_totals is not None:
            self.unit_totals.add(rows, batch_scores.sum(0), self._unit_split.cpu())
        self._batch = self._scores = self._self_influence = self._tokens = self._unit_split = None

    def _split_into_units(self, name: str, V: torch.Tensor, layer: LayerBatch, unit_split: torch.Tensor
                          ) -> tuple[torch.Tensor | None, torch.Tensor]:
        """The layer's unit split added into ``unit_split`` [Q, B, U]; returns its token terms and scores, which
        are sums of the same product (one contraction, not two)."""
        part = self.units.layers[name]
        split, tokens = layer_split(V, self.split_queries[name], layer, part.axis, self.per_token is not None,
                                    self.workspace)
        to_units(split.double(), part.assignment, unit_split)
        return tokens, split.sum(-1)

    def _store_tokens(self, rows: torch.Tensor, lengths: torch.Tensor, tokens: torch.Tensor) -> None:
        # Position t's activity predicts token t+1: the contribution is shown on the predicted token.
        for b, (row, n) in enumerate(zip(rows.tolist(), lengths.tolist())):
            lo = int(self.token_offsets[row])
            self.per_token[:, lo + 1:lo + n] = tokens[:, b, :n - 1]

    def state(self) -> dict[str, torch.Tensor]:
        """The scored columns only: rows [lo, hi) and their scores, tokens and self-influence."""
        lo, hi = self.seen
        state = {"rows": torch.tensor([lo, hi]), "scores": self.scores[:, :, lo:hi]}
        if self.self_influence is not None:
            state["self_influence"] = self.self_influence[lo:hi]
        if self.per_token is not None:
            state["per_token"] = self.per_token[:, int(self.token_offsets[lo]):int(self.token_offsets[hi])]
        if self.unit_totals is not None:
            state.update(self.unit_totals.state())
        return state

    def merge(self, state: dict[str, torch.Tensor]) -> None:
        lo, hi = state["rows"].tolist()
        self.seen = (min(self.seen[0], lo), max(self.seen[1], hi))
        self.scores[:, :, lo:hi] += state["scores"]
        if self.self_influence is not None:
            self.self_influence[lo:hi] += state["self_influence"]
        if self.per_token is not None:
            self.per_token[:, int(self.token_offsets[lo]):int(self.token_offsets[hi])] += state["per_token"]
        if self.unit_totals is not None:
            self.unit_totals.merge(state)

    def totals(self) -> dict[str, torch.Tensor]:
        tensors = {"scores": self.scores}
        if self.self_influence is not None:
            tensors["self_influence"] = self.self_influence
        if self.per_token is not None:
            tensors["per_token"] = self.per_token
        if self.unit_totals is not None:
            tensors.update(self.unit_totals.totals())
        return tensors

    def score_matrix(self) -> torch.Tensor:
        """The score matrix [Q, N] (sum over layers), in the accumulation dtype (float32)."""
        return self.scores.sum(0).to(self.dtype)


def _on(V: torch.Tensor | LowRankQueries, execution: Execution) -> torch.Tensor | LowRankQueries:
    """A preconditioned query gradient in the model's dtype on its device, for the contraction."""
    if isinstance(V, LowRankQueries):
        return LowRankQueries(*(t.to(execution.device, execution.dtype) for t in (V.U, V.W)))
    return V.to(execution.device, execution.dtype)


def sequence_scores(V: torch.Tensor | LowRankQueries, layer: LayerBatch, workspace: Workspace) -> torch.Tensor:
    """⟨V_q, DW̄_b⟩ for every query q and sequence b of the batch, via per-example gradients: [Q, B]."""
    if isinstance(V, LowRankQueries):
        V = V.dense()
    DW = sequence_products(layer.output_grads, layer.inputs, workspace, "DW")
    return V.reshape(V.shape[0], -1) @ DW.reshape(DW.shape[0], -1).T


def token_contributions(V: torch.Tensor | LowRankQueries, layer: LayerBatch) -> torch.Tensor:
    """Ds_tᵀ V_q ā_t for every query q, sequence b and position t: [Q, B, T]."""
    ds, a = layer.output_grads, layer.inputs
    if isinstance(V, LowRankQueries):
        left = torch.einsum("bto,qor->qbtr", ds, V.U)
        right = torch.einsum("bti,qir->qbtr", a, V.W)
        return (left * right).sum(-1)
    return token_terms(V, layer)


def self_influence(curvature: LayerCurvature, damping: float | None, ds: torch.Tensor, a: torch.Tensor,
                   workspace: Workspace | None = None) -> torch.Tensor:
    """∇Lᵀ (G + λI)⁻¹ ∇L per row of gradients given by their rows (Ds [B, T, out], ā [B, T, in(+1)]), computed
    in the eigenbasis: Σ (Q_Sᵀ DW̄ Q_A)∘2 ⊘ (Λ + λ): [B] float64. The per-row gradients and their squares go
    into ``workspace``'s buffers (reused batch after batch: no fresh pages to fault in)."""
    workspace = workspace or Workspace(a.device)
    a = a if curvature.Q_A is None else a @ curvature.Q_A.to(a.dtype)
    ds = ds if curvature.Q_S is None else ds @ curvature.Q_S.to(a.dtype)
    DW = sequence_products(ds, a, workspace, "self-influence DW")
    if curvature.eigenvalues is None:
        return _square_norm(DW, None, workspace)
    return damped_square_norm(DW, curvature.eigenvalues, curvature.damping(damping), workspace)


def damped_square_norm(rotated: torch.Tensor, eigenvalues: torch.Tensor, damping: float,
                       workspace: Workspace | None = None) -> torch.Tensor:
    """xᵀ (G + λI)⁻¹ x for gradients x given in the eigenbasis (eq. 21): Σ_ij x̃_ij² / (Λ_ij + λ) per row: [B]
    float64. Each term is formed in x's precision (float32 unless x is float64), the sum in float64."""
    x = rotated if rotated.dtype == torch.float64 else rotated.float()
    workspace = workspace or Workspace(x.device)
    weights = workspace.get("1/(Λ+λ)", tuple(eigenvalues.shape), x.dtype)
    torch.add(eigenvalues.to(x.dtype), damping, out=weights).reciprocal_()
    return _square_norm(x, weights, workspace)


def _square_norm(x: torch.Tensor, weights: torch.Tensor | None, workspace: Workspace) -> torch.Tensor:
    """Σ_ij x_ij² w_ij per row (w = 1 when None) [B] float64: the terms in one reused buffer of x's dtype, summed
    over j in it and over i in float64 (a float64 sum of every term would first copy them all to float64)."""
    squares = workspace.get("squares", tuple(x.shape), x.dtype)
    torch.mul(x, x, out=squares)
    if weights is not None:
        squares.mul_(weights)
    return squares.sum(-1).double().flatten(1).sum(1)


def _low_rank_is_cheaper(V: LowRankQueries, layer: LayerBatch) -> bool:
    n_queries, n_out, rank = V.U.shape
    tokens, n_in = layer.inputs.shape[1], layer.inputs.shape[-1]
    contraction = n_queries * tokens * rank * (n_in + n_out)
    materialised = tokens * n_out * n_in + n_queries * n_out * n_in
    return contraction < materialised
