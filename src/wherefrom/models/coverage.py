"""What share of a model's parameters the tracked layers cover, and which kinds of parameters are left out.

Every `fit` prints this and records it in the run's manifest ("tracking 48 layers: 91% of parameters; not
tracked: embeddings 6%, norms 0.1%"). A preset that leaves out most of the parameters of the kind it names (an
experts class the layer registry cannot read, say) is refused: influence computed without them would silently
describe a different model.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from wherefrom.errors import WherefromError
from wherefrom.models.layers import TrackedLayer
from wherefrom.models.names import (
    ATTENTION,
    EMBEDDINGS,
    MLP,
    NORMS,
    OTHER_MODALITIES,
    OUTPUT_HEADS,
    is_router_name,
)

_KINDS: tuple[tuple[str, Callable[[str], bool]], ...] = (
    ("output head", lambda name: name.split(".")[-2] in OUTPUT_HEADS if "." in name else False),
    ("other modalities' encoders", lambda name: bool(OTHER_MODALITIES.search(name))),
    ("embeddings", lambda name: bool(EMBEDDINGS.search(name))),
    ("norms", lambda name: bool(NORMS.search(name.split(".")[-2].lower())) if "." in name else False),
    ("routers", is_router_name),
    ("attention", lambda name: bool(ATTENTION.search(name))),
    ("MLP and experts", lambda name: bool(MLP.search(name))),
)
_UNTRACKED_LIMIT = 0.1  # a preset may leave out at most this share of the parameters of the kind it names
_PRESET_KIND = {"mlp": "MLP and experts", "experts": "MLP and experts", "attention": "attention"}


def parameter_kind(name: str) -> str:
    """The kind of a parameter, from its full name: embeddings, norms, attention, MLP and experts, ..., or other."""
    for kind, matches in _KINDS:
        if matches(name):
            return kind
    return "other"


@dataclass(frozen=True)
class Coverage:
    """Parameter counts: tracked, in all, and per kind of what is not tracked."""

    tracked_layers: int
    tracked: int
    total: int
    not_tracked: dict[str, int]

    @property
    def share(self) -> float:
        return self.tracked / self.total if self.total else 0.0

    def summary(self) -> str:
        """One line: 'tracking 48 layers: 91% of parameters; not tracked: embeddings 6%, norms 0.1%'."""
        left = ", ".join(f"{kind} {_percent(count / self.total)}"
                         for kind, count in sorted(self.not_tracked.items(), key=lambda kv: -kv[1]) if count)
        return (f"tracking {self.tracked_layers} layers: {_percent(self.share)} of "
                f"{self.total:,} parameters; not tracked: {left or 'nothing'}")

    def to_json(self) -> dict[str, object]:
        return {"tracked_layers": self.tracked_layers, "tracked_parameters": self.tracked,
                "total_parameters": self.total, "share": self.share, "not_tracked": self.not_tracked}


def _percent(share: float) -> str:
    return f"{100 * share:.0f}%" if share >= 0.01 or share == 0 else f"{100 * share:.1g}%"


def _untracked_by_parameter(model: nn.Module, layers: list[TrackedLayer]) -> dict[str, tuple[int, int]]:
    """Per parameter (full name): (elements, elements no tracked layer covers). LoRA models: the adapters only."""
    covered: dict[str, int] = {}
    for layer in layers:
        prefix = layer.module_name
        covered[f"{prefix}.{layer.weight}"] = covered.get(f"{prefix}.{layer.weight}", 0) + (
            layer.shape.out_features * layer.shape.in_features)
        if layer.shape.has_bias:
            covered[f"{prefix}.{layer.bias}"] = covered.get(f"{prefix}.{layer.bias}", 0) + layer.shape.out_features
    named = list(model.named_parameters())
    if any(".lora_" in name for name, _ in named):
        named = [(name, p) for name, p in named if ".lora_" in name]
    return {name: (p.numel(), max(p.numel() - covered.get(name, 0), 0)) for name, p in named}


def coverage(model: nn.Module, layers: list[TrackedLayer]) -> Coverage:
    """How much of ``model`` the tracked ``layers`` cover."""
    counts = _untracked_by_parameter(model, layers)
    not_tracked: dict[str, int] = {}
    for name, (_, left) in counts.items():
        if left:
            kind = parameter_kind(name)
            not_tracked[kind] = not_tracked.get(kind, 0) + left
    total = sum(n for n, _ in counts.values())
    return Coverage(len(layers), total - sum(left for _, left in counts.values()), total, not_tracked)


def check_preset_coverage(model: nn.Module, preset: str, layers: list[TrackedLayer]) -> None:
    """Refuse a preset that leaves out more than a tenth of the parameters of the kind it names, naming them."""
    kind = _PRESET_KIND.get(preset)
    if kind is None:
        return
    counts = {name: c for name, c in _untracked_by_parameter(model, layers).items()
              if parameter_kind(name) == kind and not name.endswith("bias")}
    total, left = sum(n for n, _ in counts.values()), sum(m for _, m in counts.values())
    if preset == "experts":
        counts = {name: c for name, c in counts.items() if _parameter_dim(model, name) == 3}
        total, left = sum(n for n, _ in counts.values()), sum(m for _, m in counts.values())
    if total and left / total > _UNTRACKED_LIMIT:
        name = max(counts, key=lambda n: counts[n][1])
        owner = model.get_submodule(name.rpartition(".")[0])
        shape = tuple(model.get_parameter(name).shape)
        raise WherefromError(
            f"--modules {preset} would leave out {_percent(left / total)} of this model's {kind} parameters, such as "
            f"{name} {list(shape)} in a {type(owner).__name__}, a parameter type wherefrom cannot track; "
            "choose --modules attention or a regular expression over the layers it can track."
        )


def _parameter_dim(model: nn.Module, name: str) -> int:
    return model.get_parameter(name).dim()
