"""Which mixture-of-experts experts carry a query's influence, from the per-layer scores (`score --per-layer`).

An expert's influence on a query is the sum, over the sequences whose influence on it is positive, of what its
tracked layers (``<experts>.<e>.gate_up_proj``/``down_proj``) contribute; its share divides that by those
sequences' total influence (so shares are signed, and the experts' and the other layers' shares sum to 1).
"""

from __future__ import annotations

import re

import torch

_EXPERT_LAYER = re.compile(r"^(?P<module>.*)\.experts\.(?P<expert>\d+)\.[^.]+$")


def expert_of(layer_name: str) -> str | None:
    """``model.layers.3.mlp:expert5`` for a layer of expert 5 of that block (the unit name), else None."""
    match = _EXPERT_LAYER.match(layer_name)
    return f"{match['module']}:expert{match['expert']}" if match else None


def expert_shares(layer_names: list[str], per_layer: torch.Tensor, scores: torch.Tensor, query: int
                  ) -> list[tuple[str, float]]:
    """Each expert's signed share of the query's positive influence, largest first ([] without experts or when no
    sequence's influence is positive). ``per_layer`` [L, Q, N], ``scores`` [Q, N]."""
    experts = [expert_of(name) for name in layer_names]
    positive = scores[query] > 0
    total = float(scores[query][positive].double().sum())
    if not any(experts) or total <= 0:
        return []
    by_layer = per_layer[:, query][:, positive].double().sum(dim=1)
    shares: dict[str, float] = {}
    for expert, value in zip(experts, by_layer.tolist()):
        if expert is not None:
            shares[expert] = shares.get(expert, 0.0) + value / total
    return sorted(shares.items(), key=lambda kv: -kv[1])
