"""The tracked layers' W̄ = [W, b] matrices [out, in(+1)] laid end to end as one flat vector (row-major per layer).

The solvers work on flat vectors [Q, P] (one row per query); the curvature code works per layer. A Linear layer
computes s = W̄ ā with ā = (a, 1) when it has a bias (Grosse et al. eq. 12); GPT-2's Conv1D stores Wᵀ.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from wherefrom.models.selection import TrackedLayer


@dataclass(frozen=True)
class Layout:
    """Where each tracked layer's W̄ lives in the flat vector."""

    names: tuple[str, ...]
    shapes: tuple[tuple[int, int], ...]  # (out, in(+1)) per layer

    @classmethod
    def of(cls, layers: list[TrackedLayer]) -> Layout:
        return cls(tuple(layer.name for layer in layers),
                   tuple((layer.shape.out_features, layer.shape.in_dim) for layer in layers))

    @property
    def sizes(self) -> list[int]:
        return [out * n_in for out, n_in in self.shapes]

    @property
    def size(self) -> int:
        return sum(self.sizes)

    def split(self, flat: torch.Tensor) -> dict[str, torch.Tensor]:
        """[..., P] → per layer [..., out, in(+1)] (views)."""
        parts = flat.split(self.sizes, dim=-1)
        return {name: part.reshape(*flat.shape[:-1], *shape)
                for name, part, shape in zip(self.names, parts, self.shapes)}

    def join(self, parts: dict[str, torch.Tensor]) -> torch.Tensor:
        """Per layer [..., out, in(+1)] → [..., P]."""
        return torch.cat([parts[name].flatten(-2) for name in self.names], dim=-1)

    def expand(self, per_layer: dict[str, float], dtype: torch.dtype, device: torch.device | str = "cpu"
               ) -> torch.Tensor:
        """One value per layer → one per parameter [P] (e.g. each layer's damping λ_ℓ), on ``device``."""
        return torch.cat([torch.full((n,), float(per_layer[name]), dtype=dtype, device=device)
                          for name, n in zip(self.names, self.sizes)])

    def per_layer_norms(self, flat: torch.Tensor) -> dict[str, torch.Tensor]:
        """Each layer's Frobenius norm of [..., P]: per layer [...]."""
        return {name: part.flatten(-2).norm(dim=-1) for name, part in self.split(flat).items()}


def module_parameters(wbars: dict[str, torch.Tensor], layers: dict[str, TrackedLayer]) -> dict[str, torch.Tensor]:
    """The modules' own parameters (full names) holding the W̄ [..., out, in(+1)] of ``wbars`` (by layer name), for
    ``functional_call``. Experts that share a fused parameter get one parameter, the other experts' slices as they
    are, so it stays differentiable in each W̄ it holds."""
    params: dict[str, torch.Tensor] = {}
    experts: dict[tuple[nn.Module, str], dict[int, torch.Tensor]] = {}
    for name, Wbar in wbars.items():
        layer = layers[name]
        for param, value in layer.split_wbar(Wbar).items():
            if layer.expert is None:
                params[f"{layer.module_name}.{param}"] = value
            else:
                experts.setdefault((layer.module, f"{layer.module_name}.{param}"), {})[layer.expert] = value
    for (module, full), slices in experts.items():
        stored = getattr(module, full.rpartition(".")[2]).detach()  # [E, ...]
        lead = next(iter(slices.values())).shape[:-(stored.dim() - 1)]  # any leading dimensions of the W̄s
        parts = [slices.get(e, stored[e].expand(*lead, *stored.shape[1:])) for e in range(stored.shape[0])]
        params[full] = torch.stack(parts, dim=-stored.dim())
    return params


def current_wbar(layer: TrackedLayer) -> torch.Tensor:
    """The layer's W̄ now: [out, in(+1)], detached."""
    return layer.current_wbar()
