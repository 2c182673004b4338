"""Mixture-of-experts routers that are not ``nn.Linear``: a module holding the router matrix W [E, H] as its own
``weight`` parameter, whose forward computes the logits F.linear(x, W) and then softmax and top-k (Mixtral,
Qwen3-MoE, OLMoE, gpt-oss, DeepSeek-V3 ...). The logits are a linear map like any other, s = W x: tracked as
one layer, captured by watching the forward for that one F.linear call (some routers cast x and W to float32
first, so the call is recognised by W's shape, not by the tensor's identity)."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from wherefrom.models.layers import LayerShape, LayerType, Take, TrackedLayer, register, watch_linear

_NAMES = ("Router", "Gate", "Gating")


def _router_weight(module: nn.Module) -> nn.Parameter | None:
    weight = module._parameters.get("weight")
    return weight if isinstance(weight, nn.Parameter) and weight.dim() == 2 else None


@register
class RouterLayer(LayerType):
    """A router's logits F.linear(x, W (, b)) with W [E, H] held by the router module itself."""

    @classmethod
    def matches(cls, module: nn.Module) -> bool:
        name = type(module).__name__
        return (not isinstance(module, nn.Linear) and _router_weight(module) is not None
                and any(part in name for part in _NAMES))

    @classmethod
    def tracked(cls, name: str, module: nn.Module) -> list[TrackedLayer]:
        n_out, n_in = module.weight.shape
        bias = module._parameters.get("bias")
        has_bias = isinstance(bias, nn.Parameter) and bias.shape == (n_out,)
        return [TrackedLayer(name, module, cls, LayerShape(n_in, n_out, has_bias), bias="bias" if has_bias else None)]

    @classmethod
    def attach(cls, module: nn.Module, layers: list[TrackedLayer], take: Take) -> Callable[[], None]:
        return watch_linear(module, layers[0], take)
