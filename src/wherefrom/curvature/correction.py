"""EK-FAC eigenvalue correction Λ = E_seq[(Q_Sᵀ DW̄ Q_A)∘2] (Grosse et al. eq. 20; George et al. 2018).

Precision policy: the rotations and DW̄ are computed in the model's dtype (ā and Ds arrive in it); Λ is summed in
float32 whatever that dtype is (the execution's accumulation dtype), like the covariances. With the factor sums
in host memory, each batch's squares are summed on the device and added to the host's sum.

DW̄ = Σ_t Ds_t ā_tᵀ is a sequence's pseudo-gradient summed over its tokens, so the correction captures the
correlation between tokens that K-FAC's independence assumption drops. Rotating ā and Ds into the eigenbases
first (cost T·(in² + out²) per sequence) is cheaper than rotating each DW̄ (out·in·(in + out)) for T < in, out.
With no bases the same pass gives the diagonal of G (the `diagonal` strategy).
"""

from __future__ import annotations

import torch

from wherefrom.allocator import Workspace
from wherefrom.curvature.blocks import Basis, rotate
from wherefrom.data.batching import Batch
from wherefrom.engine.execution import Execution
from wherefrom.engine.passes import SummedTensors
from wherefrom.engine.stream import LayerBatch, sequence_products


class CorrectionAccumulator(SummedTensors):
    """Sums (Q_Sᵀ DW̄ Q_A)∘2 per layer over sequences, each layer as the backward pass reaches it."""

    def __init__(self, bases: dict[str, tuple[Basis | None, Basis | None]],
                 shapes: dict[str, tuple[int, int]], execution: Execution) -> None:
        dtype, device = execution.dtype, execution.device
        converted: dict[int, Basis] = {}  # one copy in the model's dtype per distinct basis (gate/up share Q_A)
        self.bases = {name: tuple(None if q is None else converted.setdefault(id(q), q.to(device=device, dtype=dtype))
                                  for q in qs) for name, qs in bases.items()}
        self.sums = {name: torch.zeros(out, n_in, dtype=execution.accumulation_dtype, device=execution.factor_device)
                     for name, (out, n_in) in shapes.items()}
        self.sums["n_sequences"] = torch.zeros((), dtype=torch.float64, device=execution.factor_device)
        self.on_host = execution.factors_on_host
        self.workspace = Workspace(device)
        self._rotated: tuple[torch.Tensor, Basis | None, torch.Tensor] | None = None  # the last ā, Q_A, ā Q_A

    def begin(self, batch: Batch) -> None:
        self.sums["n_sequences"] += batch.rows.numel()
        self._rotated = None

    def layer(self, name: str, layer: LayerBatch) -> None:
        """Add each sequence of the batch for one layer (an expert's over its routed tokens only)."""
        Q_A, Q_S = self.bases[name]
        layer = layer.routed_tokens_only()
        a = layer.inputs
        if self._rotated is None or self._rotated[0] is not a or self._rotated[1] is not Q_A:
            # layers sharing ā and Q_A (gate_proj, up_proj) arrive one after the other and rotate it once
            self._rotated = (a, Q_A, a if Q_A is None else rotate(a, Q_A, out=self.workspace.get("a", a.shape, a.dtype)))
        grads = layer.output_grads
        ds = grads if Q_S is None else rotate(grads, Q_S, out=self.workspace.get("ds", grads.shape, grads.dtype))
        rotated_a = self._rotated[2]
        DW = sequence_products(ds, rotated_a, self.workspace, "DW")  # rotated per-sequence gradients
        total = self.sums[name]
        squares = total if not self.on_host else self.workspace.get("squares", total.shape, total.dtype).zero_()
        for sequence in DW:  # in place: no [B, out, in] temporary for the squares
            squares.addcmul_(sequence, sequence)
        if squares is not total:
            total += squares.to(total.device)

    def end(self, loss: torch.Tensor) -> None:
        self._rotated = None

    def eigenvalues(self) -> dict[str, torch.Tensor]:
        """Per layer Λ [out, in(+1)]: the mean over sequences."""
        n = float(self.sums["n_sequences"])
        return {name: s / n for name, s in self.sums.items() if name != "n_sequences"}
