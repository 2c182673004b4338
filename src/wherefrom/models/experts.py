"""Mixture-of-experts layers whose experts are fused 3-D parameters (Mixtral, Qwen3-MoE, OLMoE, gpt-oss, ...).

Transformers stores a block's E experts as ``gate_up_proj`` [E, 2I, H] (or ``up_proj`` without a gate) and
``down_proj`` [E, H, I] (transposed, [E, in, out], where the class says so), optional biases [E, out], and
marks the class with ``use_experts_implementation``, whose flags (has_gate, is_transposed, has_bias,
has_post_expert_norm, the class's ``_apply_gate``) describe the computation completely. Each expert's two
matrices are tracked as two layers, ``<experts>.<e>.gate_up_proj`` and ``<experts>.<e>.down_proj``.

Why per expert (docs/experts.md has the derivation): token t routed to expert e with weight r_te adds
r_te · down_e(act(gate_up_e(x_t))) to the block's output. Expert e's weights touch only its routed tokens, so
the gradient of the loss with respect to them is Σ_{t→e} Ds_t ā_tᵀ with ā_t the expert's input at t and
Ds_t = ∂L/∂s_t its output gradient, which carries r_te (the routing weight multiplies the output after the
projection). The token-summed Gauss-Newton block of W_e is then K-FAC's A_e ⊗ S_e with A_e, S_e summed over the
tokens routed to e only: setting ā_t = 0 and Ds_t = 0 at the other tokens makes every downstream pass exact
without a special case. Top-k routes a token to k experts; it appears in each one's factors once. Shared
experts are ordinary MLPs (nn.Linear) and the router an ordinary linear map.

Capture is independent of the kernel the user configured (eager loop, batched_mm, grouped_mm): while
wherefrom streams, the experts run :func:`routed_forward`, one loop over experts written from the same flags
as transformers' own kernels, which hands each projection's input rows and output to a tap. It computes the
same function as every kernel (tests compare it with eager), so nothing depends on the kernel chosen.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

from wherefrom.models.layers import LayerShape, LayerType, Take, TrackedLayer, register, replace_forward

# tap(expert, parameter, routed token rows, rows' input, rows' output before anything else is applied to it)
Tap = Callable[[int, str, torch.Tensor, torch.Tensor, torch.Tensor], None]


def is_fused_experts(module: nn.Module) -> bool:
    """Whether ``module`` holds experts as 3-D parameters described by transformers' experts-implementation flags."""
    down = getattr(module, "down_proj", None)
    up = getattr(module, "gate_up_proj", None) if getattr(module, "has_gate", True) else getattr(module, "up_proj", None)
    return (isinstance(down, nn.Parameter) and isinstance(up, nn.Parameter) and down.dim() == 3 and up.dim() == 3
            and hasattr(module, "is_transposed") and hasattr(module, "has_gate"))


def _up_name(module: nn.Module) -> str:
    return "gate_up_proj" if module.has_gate else "up_proj"


@register
class FusedExpertsLayer(LayerType):
    """One expert's slice of a fused experts parameter: W_e = P[e] ([out, in], or [in, out] when transposed)."""

    @classmethod
    def matches(cls, module: nn.Module) -> bool:
        return is_fused_experts(module)

    @classmethod
    def tracked(cls, name: str, module: nn.Module) -> list[TrackedLayer]:
        return expert_layers(cls, name, module, (_up_name(module), "down_proj"), bool(module.is_transposed),
                             bool(getattr(module, "has_bias", False)))

    @classmethod
    def attach(cls, module: nn.Module, layers: list[TrackedLayer], take: Take) -> Callable[[], None]:
        """While attached, the experts run :func:`routed_forward`, whose tap hands each tracked projection to ``take``."""
        names = {(layer.expert, layer.weight): layer.name for layer in layers}

        def forward(hidden_states: torch.Tensor, top_k_index: torch.Tensor, top_k_weights: torch.Tensor) -> torch.Tensor:
            def tap(expert: int, param: str, rows: torch.Tensor, a: torch.Tensor, s: torch.Tensor) -> None:
                if (expert, param) in names:
                    take(names[expert, param], a, s, rows)

            return routed_forward(module, hidden_states, top_k_index, top_k_weights, tap)

        return replace_forward(module, forward)


def expert_layers(layer_type: type[LayerType], name: str, module: nn.Module, params: tuple[str, ...],
                  transposed: bool, has_bias: bool) -> list[TrackedLayer]:
    """Two layers per expert, one per projection in ``params`` ([E, out, in], or [E, in, out] when transposed)."""
    layers = []
    for e in range(getattr(module, params[-1]).shape[0]):
        for param in params:
            stored = getattr(module, param)
            n_out, n_in = stored.shape[:0:-1] if transposed else stored.shape[1:]
            bias = f"{param}_bias" if has_bias else None
            layers.append(TrackedLayer(f"{name}.{e}.{param}", module, layer_type, LayerShape(n_in, n_out, has_bias),
                                       weight=param, bias=bias, transposed=transposed, expert=e))
    return layers


@contextmanager
def experts_in_one_loop(model: nn.Module) -> Iterator[None]:
    """While inside, every fused experts module runs :func:`routed_forward` (tapping nothing): the same function,
    which forward-mode autodiff (the solvers' Jacobian-vector products) can go through, as transformers' grouped
    kernels cannot."""
    undo = [replace_forward(module, lambda h, index, weights, m=module: routed_forward(m, h, index, weights, _no_tap))
            for module in model.modules() if is_fused_experts(module)]
    try:
        yield
    finally:
        for step in reversed(undo):
            step()


def _no_tap(*_: object) -> None:
    """A tap that takes nothing."""


def _project(module: nn.Module, param: str, expert: int, x: torch.Tensor) -> torch.Tensor:
    W = getattr(module, param)[expert]
    W = W.transpose(0, 1) if module.is_transposed else W
    bias = getattr(module, f"{param}_bias")[expert] if getattr(module, "has_bias", False) else None
    return F.linear(x, W, bias)


def routed_forward(module: nn.Module, hidden_states: torch.Tensor, top_k_index: torch.Tensor,
                   top_k_weights: torch.Tensor, tap: Tap) -> torch.Tensor:
    """The experts' output for ``hidden_states`` [N, H] routed by ``top_k_index``/``top_k_weights`` [N, k], one expert
    at a time; ``tap`` sees each projection of each expert (also those that no token reaches, with no rows)."""
    x = hidden_states.reshape(-1, hidden_states.shape[-1])
    out = torch.zeros_like(x)
    up = _up_name(module)
    for expert in range(module.down_proj.shape[0]):
        rows, slot = torch.where(top_k_index.reshape(x.shape[0], -1) == expert)
        routed = x[rows]
        h = _project(module, up, expert, routed)
        tap(expert, up, rows, routed, h)
        h = module._apply_gate(h) if module.has_gate else module.act_fn(h)
        y = _project(module, "down_proj", expert, h)
        tap(expert, "down_proj", rows, h, y)
        if getattr(module, "has_post_expert_norm", False):
            y = module.post_expert_norm(y)
        y = y * top_k_weights.reshape(x.shape[0], -1)[rows, slot, None].to(y.dtype)
        out.index_add_(0, rows, y.to(out.dtype))
    return out.view(hidden_states.shape)


@register
class StackedExpertsLayer(LayerType):
    """Llama 4's experts: ``gate_up_proj`` [E, H, 2I] and ``down_proj`` [E, I, H] applied to every token, each
    expert to its own copy of the hidden states scaled by the token's routing score (zero where not routed), laid
    end to end as [E·N, H]. The routing weight is then inside ā, not Ds; the per-expert blocks are as exact."""

    @classmethod
    def matches(cls, module: nn.Module) -> bool:
        return type(module).__name__ == "Llama4TextExperts"

    @classmethod
    def tracked(cls, name: str, module: nn.Module) -> list[TrackedLayer]:
        return expert_layers(cls, name, module, ("gate_up_proj", "down_proj"), True, False)

    @classmethod
    def attach(cls, module: nn.Module, layers: list[TrackedLayer], take: Take) -> Callable[[], None]:
        names = {(layer.expert, layer.weight): layer.name for layer in layers}

        def forward(hidden_states: torch.Tensor) -> torch.Tensor:
            x = hidden_states.view(module.gate_up_proj.shape[0], -1, hidden_states.shape[-1])
            outputs = []
            for expert in range(x.shape[0]):
                # Routed tokens have a non-zero score; at the others the copy is 0 and so is the expert's output
                # (no biases), so only the routed rows are computed.
                rows = x[expert].detach().ne(0).any(dim=-1).nonzero().squeeze(1)
                routed = x[expert][rows]
                h = routed @ module.gate_up_proj[expert]
                if (expert, "gate_up_proj") in names:
                    take(names[expert, "gate_up_proj"], routed, h, rows)
                gate, up = h.chunk(2, dim=-1)
                h = up * module.act_fn(gate)
                y = h @ module.down_proj[expert]
                if (expert, "down_proj") in names:
                    take(names[expert, "down_proj"], h, y, rows)
                outputs.append(y.new_zeros(x.shape[1], y.shape[-1]).index_add(0, rows, y))
            return torch.cat(outputs).view(-1, outputs[0].shape[-1])

        return replace_forward(module, forward)
