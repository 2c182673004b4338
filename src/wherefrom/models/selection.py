"""Which modules of a model to track: presets (mlp, experts, router, attention, all-linear) or a regular expression.

Every trackable module of the layer registry is a candidate: nn.Linear, GPT-2's Conv1D, fused mixture-of-experts
parameters (one layer per expert and projection) and routers. A preset is a rule over module names and layer
types; anything else is a regular expression over module names (an expert's layers are named
``<experts>.<e>.gate_up_proj``/``down_proj``, so ``experts\\.3\\.`` picks expert 3).
"""

from __future__ import annotations

import re
from collections.abc import Callable

from torch import nn

from wherefrom.errors import WherefromError
from wherefrom.models.coverage import check_preset_coverage
from wherefrom.models.experts import StackedExpertsLayer  # noqa: F401 - registers the experts layer types
from wherefrom.models.layers import TrackedLayer, layer_type_of
from wherefrom.models.names import ATTENTION, MLP, OTHER_MODALITIES, OUTPUT_HEADS, OUTSIDE_FORWARD, is_router_name
from wherefrom.models.routers import RouterLayer

__all__ = ["PRESETS", "TrackedLayer", "select_layers"]


def _is_router(layer: TrackedLayer) -> bool:
    return layer.layer_type is RouterLayer or is_router_name(layer.name)


def _is_expert(layer: TrackedLayer) -> bool:
    return layer.expert is not None


def _is_attention(layer: TrackedLayer) -> bool:
    return bool(ATTENTION.search(layer.name))


PRESETS: dict[str, tuple[str, Callable[[TrackedLayer], bool]]] = {
    "mlp": ("dense MLPs, routed and shared experts (the default, as in the paper)",
            lambda layer: _is_expert(layer) or (bool(MLP.search(layer.name)) and not _is_router(layer)
                                                and not _is_attention(layer))),
    "experts": ("the routed experts of mixture-of-experts blocks", _is_expert),
    "router": ("the routers of mixture-of-experts blocks", _is_router),
    "attention": ("attention projections", _is_attention),
    "all-linear": ("every trackable layer but the output head", lambda layer: True),
}


def trackable_layers(model: nn.Module) -> list[TrackedLayer]:
    """Every W̄ the layer registry can track in ``model``, in model order (LoRA models: the adapters only)."""
    named = list(model.named_modules())
    has_lora = any(".lora_A" in name for name, _ in named)
    layers = []
    for name, module in named:
        layer_type = layer_type_of(module)
        if layer_type is None or (has_lora and ".lora_" not in name) or name.rpartition(".")[2] in OUTSIDE_FORWARD:
            continue
        layers.extend(layer_type.tracked(name, module))
    return layers


def select_layers(model: nn.Module, modules: str) -> list[TrackedLayer]:
    """The trackable layers of ``model`` matching a preset name or a regular expression, in model order.

    The output head (unembedding) is never part of a preset, as in the paper, nor are the encoders of other
    modalities in multimodal models (a text completion does not run them). When the model carries LoRA
    adapters, only the adapters' own linear layers are tracked (the base weights are frozen). A preset that matches
    nothing, or that leaves out most of the parameters of the kind it names, is refused in one line.
    """
    candidates = trackable_layers(model)
    if modules in PRESETS:
        layers = _preset_layers(candidates, modules)
        check_preset_coverage(model, modules, layers)  # first: parameters of its kind it cannot track are the cause
        if not layers:
            raise WherefromError(f"--modules {modules} ({PRESETS[modules][0]}) matches no layer of this model. "
                                 f"{_what_there_is(candidates)}")
        return layers
    pattern = _compile(modules)
    layers = [layer for layer in candidates if pattern.search(layer.name)]
    if not layers:
        raise WherefromError(f"--modules {modules!r} is not a preset, and as a regular expression it matches no "
                             f"trackable layer of this model. {_what_there_is(candidates)}")
    return layers


def _preset_layers(candidates: list[TrackedLayer], preset: str) -> list[TrackedLayer]:
    rule = PRESETS[preset][1]
    return [layer for layer in candidates if rule(layer) and layer.name.split(".")[-1] not in OUTPUT_HEADS
            and not OTHER_MODALITIES.search(layer.name)]


def _what_there_is(candidates: list[TrackedLayer]) -> str:
    matching = {name: len(_preset_layers(candidates, name)) for name in PRESETS}
    presets = ", ".join(f"{name} ({count} layers)" for name, count in matching.items())
    examples = ", ".join(layer.name for layer in candidates[:4])
    return f"Presets on this model: {presets}. Trackable layers look like: {examples or 'none'}."


def _compile(modules: str) -> re.Pattern[str]:
    try:
        return re.compile(modules)
    except re.error as exc:
        raise WherefromError(f"--modules {modules!r} is not a preset ({', '.join(PRESETS)}) nor a valid regular "
                             f"expression: {exc}") from exc
