"""EK-FAC eigenvalue correction Λ = E_seq[(Q_Sᵀ DW̄ Q_A)∘2] (Grosse et al. eq. 20; George et al. 2018).

Sums are kept in the model's dtype, like the covariances.

DW̄ = Σ_t Ds_t ā_tᵀ is a sequence's pseudo-gradient summed over its tokens, so the correction captures the
correlation between tokens that K-FAC's independence assumption drops. Rotating ā and Ds into the eigenbases
first (cost T·(in² + out²) per sequence) is cheaper than rotating each DW̄ (out·in·(in + out)) for T < in, out.
With no bases the same pass gives the diagonal of G (the `diagonal` strategy).
"""

from __future__ import annotations

import torch

from wherefrom.allocator import Workspace
from wherefrom.curvature.blocks import Basis, rotate
from wherefrom.engine.passes import SummedTensors
from wherefrom.engine.stream import StreamBatch


class CorrectionAccumulator(SummedTensors):
    """Consumes the stream and sums (Q_Sᵀ DW̄ Q_A)∘2 per layer over sequences."""

    def __init__(self, bases: dict[str, tuple[Basis | None, Basis | None]],
                 shapes: dict[str, tuple[int, int]], dtype: torch.dtype) -> None:
        converted: dict[int, Basis] = {}  # one copy in the model's dtype per distinct basis (gate/up share Q_A)
        self.bases = {name: tuple(None if q is None else converted.setdefault(id(q), q.to(dtype)) for q in qs)
                      for name, qs in bases.items()}
        self.sums = {name: torch.zeros(out, n_in, dtype=dtype) for name, (out, n_in) in shapes.items()}
        self.sums["n_sequences"] = torch.zeros((), dtype=torch.float64)
        self.workspace = Workspace()

    def update(self, item: StreamBatch) -> None:
        """Add each sequence of one batch."""
        self.sums["n_sequences"] += item.batch.rows.numel()
        rotated_inputs: dict[tuple[int, int], torch.Tensor] = {}
        for name, layer in item.layers.items():
            Q_A, Q_S = self.bases[name]
            key = (id(layer.inputs), id(Q_A))
            if key not in rotated_inputs:  # layers sharing ā and Q_A (gate_proj, up_proj) rotate it once
                rotated_inputs[key] = layer.inputs if Q_A is None else rotate(
                    layer.inputs, Q_A, out=self.workspace.get("a", layer.inputs.shape, layer.inputs.dtype))
            grads = layer.output_grads
            ds = grads if Q_S is None else rotate(grads, Q_S, out=self.workspace.get("ds", grads.shape, grads.dtype))
            a = rotated_inputs[key]
            DW = self.workspace.get("DW", (ds.shape[0], ds.shape[2], a.shape[2]), ds.dtype)
            torch.bmm(ds.transpose(1, 2), a, out=DW)  # rotated per-sequence gradients
            total = self.sums[name]
            for sequence in DW:  # in place: no [B, out, in] temporary for the squares
                total.addcmul_(sequence, sequence)
    def eigenvalues(self) -> dict[str, torch.Tensor]:
        """Per layer Λ [out, in(+1)]: the mean over sequences."""
        n = float(self.sums["n_sequences"])
        return {name: s / n for name, s in self.sums.items() if name != "n_sequences"}
