"""The proximal Bregman response function (Bae et al. 2022; Grosse et al. 2023 eq. 7-8), solved by optimisation.

θ^s(ε) = argmin_θ (1/N) Σ_i D_L(h(θ, x_i), h(θ_s, x_i)) + ε L(z_m, θ) + ½ Σ_ℓ λ_ℓ ‖θ_ℓ - θ_s,ℓ‖²,
with D_L(h, h_s) = L(h) - L(h_s) - ∇L(h_s)ᵀ (h - h_s) the Bregman divergence of the output loss (for softmax
cross-entropy, KL(p_s ‖ p) summed over positions). ε > 0 upweights z_m, matching wherefrom's sign: the first-order
response is θ^s(ε) - θ_s ≈ -ε (G + λI)⁻¹ ∇L(z_m), so Δf_q / ε ≈ ∇L_qᵀ (G + λI)⁻¹ ∇L(z_m), the influence, with
G the full Gauss-Newton Hessian of the optimised parameters (here the tracked layers) at θ_s.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn
from torch.func import functional_call

from wherefrom.data.batching import make_batches
from wherefrom.engine.stream import token_summed_nll
from wherefrom.models.selection import TrackedLayer
from wherefrom.progress import track
from wherefrom.solvers.layout import Layout, current_wbar, module_parameters


@dataclass
class Problem:
    """Outputs h(θ) of batches of data, their summed loss, and θ_s, for parameters θ as one flat vector [P]."""

    theta: torch.Tensor
    n_batches: int
    n_sequences: int
    outputs: Callable[[torch.Tensor, int], torch.Tensor]  # (θ, batch index) → h
    loss: Callable[[torch.Tensor, int], torch.Tensor]  # (h, batch index) → Σ over the batch's sequences of L

    def losses(self, theta: torch.Tensor) -> torch.Tensor:
        """Each batch's summed loss at θ: [n_batches]."""
        return torch.stack([self.loss(self.outputs(theta, b), b) for b in range(self.n_batches)])


def language_model_problem(model: nn.Module, layers: list[TrackedLayer], token_lists: Sequence[Sequence[int]],
                           first_targets: Sequence[int] | None = None, batch_size: int = 8) -> Problem:
    """θ = the tracked layers' W̄ (flat), h = logits, L = the token-summed NLL from ``first_targets`` on (default 1)."""
    layout = Layout.of(layers)
    by_name = {layer.name: layer for layer in layers}
    batches = list(make_batches(token_lists, first_targets or [1] * len(token_lists), batch_size))

    def outputs(theta: torch.Tensor, b: int) -> torch.Tensor:
        params = module_parameters(layout.split(theta), by_name)
        batch = batches[b]
        output = functional_call(model, params, (), {"input_ids": batch.input_ids,
                                                     "attention_mask": batch.attention_mask})
        return output.logits if hasattr(output, "logits") else output

    def loss(h: torch.Tensor, b: int) -> torch.Tensor:
        return token_summed_nll(h, batches[b].input_ids, batches[b].target_mask).sum()

    theta = layout.join({layer.name: current_wbar(layer) for layer in layers})
    return Problem(theta, len(batches), len(token_lists), outputs, loss)


def pbrf_response(data: Problem, upweighted: Problem, damping: torch.Tensor, epsilon: float, iterations: int = 200,
                  description: str = "PBRF", quiet: bool = False) -> torch.Tensor:
    """θ^s(ε) - θ_s [P], minimising the proximal Bregman objective by full-batch L-BFGS (strong Wolfe line search).

    ``data`` gives the training data of the Bregman term, ``upweighted`` the sequence z_m (its losses summed), and
    ``damping`` λ per parameter [P].
    """
    theta_s = data.theta
    with torch.no_grad():
        reference = [data.outputs(theta_s, b) for b in range(data.n_batches)]
    slopes, base_losses = [], []
    for b, h_s in enumerate(reference):  # L(h_s) and ∇_h L(h_s), fixed for the whole optimisation
        h = h_s.clone().requires_grad_(True)
        value = data.loss(h, b)
        slopes.append(torch.autograd.grad(value, h)[0])
        base_losses.append(value.detach())
    delta = torch.zeros_like(theta_s, requires_grad=True)
    initial = epsilon * _gradient(lambda d: upweighted.losses(theta_s + d).sum(), delta)
    optimiser = torch.optim.LBFGS([delta], lr=1, max_iter=iterations, history_size=50,
                                  tolerance_grad=1e-9 * float(initial.abs().max()), tolerance_change=0.0,
                                  line_search_fn="strong_wolfe")
    progress = iter(track(range(iterations * 2), iterations * 2, description, quiet))  # evaluations, at most

    def objective() -> torch.Tensor:
        optimiser.zero_grad()
        next(progress, None)
        total = torch.zeros((), dtype=theta_s.dtype)
        theta = theta_s + delta
        for b in range(data.n_batches):  # one graph per batch: memory of one batch
            h = data.outputs(theta, b)
            bregman = data.loss(h, b) - base_losses[b] - (slopes[b] * (h - reference[b])).sum()
            (bregman / data.n_sequences).backward()
            total += bregman.detach() / data.n_sequences
        extra = epsilon * upweighted.losses(theta_s + delta).sum() + 0.5 * (damping * delta.square()).sum()
        extra.backward()
        return total + extra.detach()

    optimiser.step(objective)
    for _ in progress:  # close the bar
        pass
    return delta.detach()


def _gradient(function: Callable[[torch.Tensor], torch.Tensor], at: torch.Tensor) -> torch.Tensor:
    return torch.autograd.grad(function(at), at)[0]
