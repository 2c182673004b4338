"""What a mixture-of-experts model's experts cost a fit: their share of the factor memory and of the passes."""

from __future__ import annotations

import torch

from wherefrom.curvature.blocks import factor_sum_bytes
from wherefrom.models.selection import TrackedLayer


def experts_note(layers: list[TrackedLayer], blocks: int, dtype: torch.dtype) -> list[str]:
    """One line for `--dry-run` when experts are tracked ([] otherwise): how many, their factor memory and share."""
    experts = [layer for layer in layers if layer.expert is not None]
    if not experts:
        return []
    modules = {layer.module_name: getattr(layer.module, layer.weight).shape[0] for layer in experts}
    top_k = {getattr(getattr(layer.module, "config", None), "num_experts_per_tok", None) for layer in experts} - {None}
    mine, total = factor_sum_bytes(experts, blocks, dtype), factor_sum_bytes(layers, blocks, dtype)
    routed = f"{min(top_k)} of {min(modules.values())} experts per token" if len(top_k) == 1 else "its routed tokens"
    return [f"experts: {sum(modules.values())} experts in {len(modules)} block(s), {len(experts)} tracked layers, "
            f"{_size(mine)} of factor sums ({mine / total:.0%} of them); each expert's covariances sum only "
            f"the tokens routed to it ({routed}), its correction and scoring run over every token"]


def _size(n: int) -> str:
    return f"{n / 2 ** 30:.2f} GiB" if n >= 2 ** 30 else f"{n / 2 ** 20:.1f} MiB"
