"""Which modules of a model to track: presets (mlp, attention, all-linear) or a regular expression."""

from __future__ import annotations

import re
from dataclasses import dataclass

from torch import nn

from wherefrom.errors import WherefromError
from wherefrom.models.layers import LayerShape, LayerType, layer_type_of

PRESETS: dict[str, str] = {
    # MLP blocks across HF families: Llama/Qwen/SmolLM (mlp.*_proj), GPT-2 (mlp.c_fc), NeoX (mlp.dense_*), OPT (fc1).
    "mlp": r"(^|\.)(mlp|feed_forward|ffn)\.|(^|\.)fc[12]$",
    "attention": r"(^|\.)(self_attn|attn|attention|self_attention)\.",
    "all-linear": r".",
}
_OUTPUT_HEADS = ("lm_head", "embed_out", "output")


@dataclass(frozen=True)
class TrackedLayer:
    """A module wherefrom tracks: its name, module, layer type and shape."""

    name: str
    module: nn.Module
    layer_type: type[LayerType]
    shape: LayerShape


def select_layers(model: nn.Module, modules: str) -> list[TrackedLayer]:
    """The trackable layers of ``model`` matching a preset name or a regular expression, in model order.

    The output head (unembedding) is never part of a preset, as in the paper. When the model carries LoRA
    adapters, only the adapters' own linear layers are tracked (the base weights are frozen).
    """
    pattern = _compile(modules)
    named = list(model.named_modules())
    has_lora = any(".lora_A" in name for name, _ in named)
    layers = []
    for name, module in named:
        layer_type = layer_type_of(module)
        if layer_type is None or not pattern.search(name):
            continue
        if modules in PRESETS and name.split(".")[-1] in _OUTPUT_HEADS:
            continue
        if has_lora and ".lora_" not in name:
            continue
        layers.append(TrackedLayer(name, module, layer_type, layer_type.shape(module)))
    if not layers:
        examples = ", ".join([n for n, m in named if layer_type_of(m) is not None][:6])
        raise WherefromError(
            f"--modules {modules!r} is not a preset ({', '.join(PRESETS)}) and, as a regular expression, matched no "
            f"trackable layer of this model. Trackable layers look like: {examples or 'none'}."
        )
    return layers


def _compile(modules: str) -> re.Pattern[str]:
    if modules in PRESETS:
        return re.compile(PRESETS[modules])
    try:
        return re.compile(modules)
    except re.error as exc:
        raise WherefromError(f"--modules {modules!r} is not a valid regular expression: {exc}") from exc
