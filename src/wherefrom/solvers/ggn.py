"""Gauss-Newton-vector products G v for the tracked layers, through the logits with torch.func.

G = (1/N) Σ_n Σ_t J_{n,t}ᵀ H_{n,t} J_{n,t}, with J_{n,t} the Jacobian of the logits at predicting position t of
sequence n with respect to the tracked layers' W̄, and H = diag(p) - p pᵀ the Hessian of the softmax
cross-entropy with respect to the logits (it does not depend on the label). This is the G that wherefrom's
EK-FAC approximates (the expectation of its sampled Fisher), on a sample of N corpus sequences.

Each product is a forward-mode J v (jvp), the Hessian H applied per position, and a reverse-mode Jᵀ u (vjp).
``block_diagonal`` keeps only each layer's own block G_ℓℓ (the approximation EK-FAC makes); the full G couples
the layers (one jvp and one vjp per product for all layers, against one per layer for the blocks).

Precision policy: the jvp and vjp run through the model in its dtype (bf16 where the model is bf16); the softmax
Hessian H is applied in float32 (like the loss), and each batch's product is handed back and summed over batches
in the dtype of the vectors V (float32 in the solvers, see ``solvers/iterative.py``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn
from torch.func import functional_call, jvp, vjp, vmap
from torch.nn.attention import SDPBackend, sdpa_kernel

from wherefrom.data.batching import Batch, make_batches
from wherefrom.models.experts import experts_in_one_loop
from wherefrom.models.selection import TrackedLayer
from wherefrom.solvers.iterative import solver_dtype
from wherefrom.solvers.layout import Layout, current_wbar, module_parameters

_QUERY_CHUNK = 4  # vectors pushed through the model together (activations grow with it)


class GaussNewton:
    """The operator v ↦ G v on flat vectors [Q, P] (see :class:`Layout`), over a fixed set of sequences."""

    def __init__(self, model: nn.Module, layers: list[TrackedLayer], token_lists: Sequence[Sequence[int]],
                 batch_size: int = 8, block_diagonal: bool = False) -> None:
        self.model, self.block_diagonal = model, block_diagonal
        self.layers = {layer.name: layer for layer in layers}
        self.layout = Layout.of(layers)
        self.base = {layer.name: current_wbar(layer) for layer in layers}
        device = next(iter(self.base.values())).device  # where the model runs
        self.batches = list(make_batches(token_lists, [1] * len(token_lists), batch_size, device=device))
        self.n_sequences = len(token_lists)
        self.on_product: Callable[[], None] | None = None  # called after each layer group's product on a batch

    @property
    def products_per_call(self) -> int:
        """How many times one full product G V calls ``on_product``: batches × layer groups."""
        return len(self.batches) * (len(self.layout.names) if self.block_diagonal else 1)

    @property
    def dtype(self) -> torch.dtype:
        return next(iter(self.base.values())).dtype

    def __call__(self, V: torch.Tensor) -> torch.Tensor:
        """G V for V [Q, P]: the mean over all sequences."""
        total = torch.zeros_like(V)
        for batch in self.batches:
            total += self.summed_over(batch, V)
        return total / self.n_sequences

    def minibatch(self, V: torch.Tensor, step: int) -> torch.Tensor:
        """A one-batch estimate of G V (batches taken in turn): what LiSSA's stochastic recursion uses."""
        batch = self.batches[step % len(self.batches)]
        return self.summed_over(batch, V) / batch.rows.numel()

    def summed_over(self, batch: Batch, V: torch.Tensor) -> torch.Tensor:
        """Σ over the batch's sequences of G_n V, in V's dtype (the products themselves in the model's)."""
        parts = self.layout.split(V.to(self.dtype))
        groups = [[name] for name in self.layout.names] if self.block_diagonal else [list(self.layout.names)]
        out: dict[str, torch.Tensor] = {}
        # Neither the fused attention kernels nor transformers' grouped expert kernels have a forward-mode derivative.
        with sdpa_kernel(SDPBackend.MATH), experts_in_one_loop(self.model):
            for names in groups:
                product = self._product(batch, {name: parts[name] for name in names})
                out.update({name: part.to(V.dtype) for name, part in product.items()})
                if self.on_product is not None:
                    self.on_product()
        return self.layout.join(out)

    def _product(self, batch: Batch, V: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Jᵀ H J V restricted to the layers of V (the others stay fixed), summed over the batch."""
        def logits_of(wbars: dict[str, torch.Tensor]) -> torch.Tensor:
            params = module_parameters(wbars, self.layers)
            output = functional_call(self.model, params, (), {"input_ids": batch.input_ids,
                                                              "attention_mask": batch.attention_mask})
            return output.logits if hasattr(output, "logits") else output

        primals = {name: self.base[name] for name in V}
        logits, pullback = vjp(logits_of, primals)
        p = torch.softmax(logits.to(solver_dtype(logits.dtype)), dim=-1)
        predicting = torch.zeros_like(batch.target_mask)
        predicting[:, :-1] = batch.target_mask[:, 1:]
        p = p * predicting.unsqueeze(-1).to(p.dtype)  # H = 0 where nothing is predicted

        def one(v: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
            _, Jv = jvp(logits_of, (primals,), (v,))
            Jv = Jv.to(p.dtype)
            HJv = p * (Jv - (p * Jv).sum(-1, keepdim=True))  # (diag p - p pᵀ) J v per position
            return pullback(HJv.to(logits.dtype))[0]

        return vmap(one, chunk_size=_QUERY_CHUNK)(V)
