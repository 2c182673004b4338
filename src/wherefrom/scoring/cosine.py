"""Normalised influence (TrackStar, Chang et al. 2024): the cosine of the query's and a training sequence's
gradients in the metric of the damped curvature,

    cos(q, z) = ∇L_qᵀ (G + λI)⁻¹ ∇L_z / (‖∇L_q‖ ‖∇L_z‖),   ‖x‖² = xᵀ (G + λI)⁻¹ x,

so the numerator is the influence (Grosse et al. eq. 30) and ‖∇L_z‖² is z's self-influence. The cosine ranks a
sequence by the direction of its gradient, not its size: a long or surprising sequence with a large gradient no
longer outranks a short one that pushes the same way.
"""

from __future__ import annotations

import torch

from wherefrom.curvature.fitting import FittedCurvature
from wherefrom.scoring.contract import self_influence
from wherefrom.scoring.query_gradients import QueryGradients


def query_self_influence(curvature: FittedCurvature, gradients: QueryGradients, damping: float | None
                         ) -> torch.Tensor:
    """‖∇L_q‖² = ∇L_qᵀ (G + λI)⁻¹ ∇L_q of every query, summed over the layers of ``gradients``: [Q] float64."""
    total = torch.zeros(gradients.logprobs.shape[0], dtype=torch.float64)
    for name, (ds, a) in gradients.factors.items():
        ds, a = (t.to(torch.promote_types(t.dtype, torch.float32)) for t in (ds, a))  # at least float32
        total += self_influence(curvature.layers[name].to(ds.device), damping, ds, a).cpu()
    return total


def cosine(scores: torch.Tensor, query_self: torch.Tensor, sequence_self: torch.Tensor) -> torch.Tensor:
    """Influence [Q, N] divided by the queries' [Q] and sequences' [N] norms (square roots of their
    self-influences): [Q, N] float64. A zero gradient has no direction; its cosine is 0."""
    norms = query_self.double().clamp_min(0).sqrt()[:, None] * sequence_self.double().clamp_min(0).sqrt()[None, :]
    return torch.where(norms > 0, scores.double() / norms.clamp_min(torch.finfo(torch.float64).tiny), 0.0)
