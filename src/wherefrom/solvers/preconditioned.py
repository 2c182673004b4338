"""A fitted curvature as a flat operator: each layer's damping λ_ℓ and its (G_ℓ + λ_ℓ I)⁻¹ (EK-FAC, eq. 21)."""

from __future__ import annotations

from collections.abc import Mapping

import torch

from wherefrom.curvature.preconditioner import LayerCurvature
from wherefrom.solvers.iterative import Operator
from wherefrom.solvers.layout import Layout


def layer_dampings(curvature: Mapping[str, LayerCurvature], layout: Layout, absolute: float | None
                   ) -> dict[str, float]:
    """λ_ℓ per layer, as scoring uses it: ``absolute`` when given, else 0.1 × the layer's mean eigenvalue."""
    return {name: curvature[name].damping(absolute) for name in layout.names}


def curvature_inverse(curvature: Mapping[str, LayerCurvature], layout: Layout, dampings: dict[str, float],
                      device: torch.device | str = "cpu") -> Operator:
    """x ↦ (G̃ + λI)⁻¹ x per layer for x on ``device``, G̃ the fitted approximation (block-diagonal over layers)."""
    layers = {name: curvature[name].to(device) for name in layout.names}  # read once (stored runs load lazily)

    def apply(x: torch.Tensor) -> torch.Tensor:
        parts = layout.split(x)
        return layout.join({name: layers[name].solve(parts[name], dampings[name]) for name in layout.names})

    return apply
