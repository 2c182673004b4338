"""Which rows and columns of each tracked layer's W̄ are which unit of the network: neuron, head or residual dim.

A unit is a set of W̄ entries, a whole row (output unit) or column (input unit) of each layer it spans:
- MLP neuron n of a block: row n of ``up_proj``/``gate_proj`` (GPT-2 ``c_fc``, OPT ``fc1``) and column n of
  ``down_proj`` (``c_proj``, ``fc2``): the three projections' shares of the same intermediate neuron.
- attention head h: its ``head_dim`` rows of the query projection (and of key/value when every query head has its
  own) and its columns of the output projection; with grouped-query attention the key/value heads, shared by
  several query heads, are units of their own (``kv0``, ``kv1``, ...). GPT-2's fused ``c_attn`` holds q, k, v
  one after the other.
- residual-stream dimension d of a block (the ``residual`` view): row d of the output projection and of
  ``down_proj``, what the block writes into the residual stream.
- mixture-of-experts (fused experts): neuron n of expert e of a block, ``model.layers.3.mlp:expert5:17`` (or
  ``3:expert5:17``): its two rows of ``gate_up_proj`` (gate and up, concatenated or interleaved), its row of
  ``up_proj`` without a gate, and column n of ``down_proj``. The ``experts`` view makes each expert one unit
  (``3:expert5``): every entry of its projections; routers and shared experts are units of the other views.
Layers of other kinds fall back to their rows. The output-projection bias column belongs to no unit.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from wherefrom.errors import WherefromError
from wherefrom.models.selection import TrackedLayer
from wherefrom.options import UNIT_VIEWS, UnitView

Axis = Literal["row", "column"]

_MLP_IN = ("up_proj", "gate_proj", "c_fc", "fc1", "w1", "w3", "dense_h_to_4h")
_MLP_OUT = ("down_proj", "fc2", "w2", "dense_4h_to_h")
_ATTN_QKV = ("q_proj", "k_proj", "v_proj", "c_attn")
_ATTN_OUT = ("o_proj", "out_proj")
_ATTENTION_PARENTS = ("self_attn", "attn", "attention", "self_attention")


@dataclass(frozen=True)
class LayerUnits:
    """How one tracked layer's W̄ splits over units: along rows or columns, ``assignment[k]`` = unit of row/column
    k (-1: no unit, e.g. a bias column)."""

    axis: Axis
    assignment: torch.Tensor  # long [out] or [in(+1)]


@dataclass(frozen=True)
class UnitMap:
    """The units of a model's tracked layers, in one view: their names and where each layer's entries go."""

    names: list[str]
    layers: dict[str, LayerUnits]

    def __len__(self) -> int:
        return len(self.names)

    def index(self, name: str) -> int:
        """The unit called ``name`` (full name such as ``model.layers.3.mlp:17``, or ``BLOCK:UNIT`` like ``3:17``)."""
        if name in self._positions:
            return self._positions[name]
        block, _, unit = name.partition(":")
        if block.isdigit() and unit:
            matches = [i for i, full in enumerate(self.names)
                       if full.partition(":")[2] == unit and _block_number(full) == int(block)]
            if len(matches) == 1:
                return matches[0]
        examples = ", ".join(self.names[:3])
        raise WherefromError(f"--unit {name!r} names no unit of the tracked layers; units look like {examples} "
                             "(or BLOCK:NEURON such as 0:5, BLOCK:headH such as 0:head1, BLOCK:expertE:NEURON such "
                             "as 0:expert3:5, BLOCK:expertE such as 0:expert3).")

    def subset(self, units: list[int]) -> UnitMap:
        """The map of only ``units`` (renumbered 0..len-1 in the given order); layers they do not touch are dropped."""
        remap = torch.full((len(self.names) + 1,), -1, dtype=torch.long)
        remap[torch.tensor(units, dtype=torch.long)] = torch.arange(len(units))
        layers = {}
        for name, part in self.layers.items():
            assignment = remap[part.assignment]  # -1 maps to remap[-1] = -1 (the extra last slot)
            if (assignment >= 0).any():
                layers[name] = LayerUnits(part.axis, assignment)
        return UnitMap([self.names[u] for u in units], layers)

    @property
    def _positions(self) -> dict[str, int]:
        return {n: i for i, n in enumerate(self.names)}


def unit_map(model: nn.Module, layers: list[TrackedLayer], view: UnitView = "nodes") -> UnitMap:
    """The units of ``layers`` in ``view``: 'nodes' (MLP neurons and attention heads) or 'residual'."""
    if view not in UNIT_VIEWS:
        raise WherefromError(f"unit view {view!r} is not one of: {', '.join(UNIT_VIEWS)}.")
    heads = _attention_heads(getattr(model, "config", None))
    names: list[str] = []
    positions: dict[str, int] = {}
    result: dict[str, LayerUnits] = {}

    def ids(labels: list[str]) -> torch.Tensor:
        out = []
        for label in labels:
            if label not in positions:
                positions[label] = len(names)
                names.append(label)
            out.append(positions[label])
        return torch.tensor(out, dtype=torch.long)

    for layer in layers:
        parent, _, leaf = layer.name.rpartition(".")
        axis, labels = _labels(layer, parent, leaf, view, heads)
        if labels is None:
            continue
        assignment = ids([label for label in labels if label is not None])
        if None in labels:  # a bias column: no unit
            full = torch.full((len(labels),), -1, dtype=torch.long)
            full[torch.tensor([label is not None for label in labels])] = assignment
            assignment = full
        result[layer.name] = LayerUnits(axis, assignment)
    if not names:
        hint = ("no expert is tracked (track experts with --modules mlp or experts)" if view == "experts"
                else "none of the tracked layers has one")
        raise WherefromError(f"--unit-view {view} finds no unit: {hint}; choose another --unit-view.")
    return UnitMap(names, result)


def find_unit(model: nn.Module, layers: list[TrackedLayer], name: str) -> dict[str, tuple[Axis, torch.Tensor]]:
    """Per tracked layer, the axis and the rows or columns of the unit called ``name`` (in either view)."""
    view: UnitView = "residual" if ":dim" in name else "experts" if re.search(r":expert\d+$", name) else "nodes"
    units = unit_map(model, layers, view)
    unit = units.index(name)
    return {layer: (part.axis, (part.assignment == unit).nonzero().flatten())
            for layer, part in units.layers.items() if (part.assignment == unit).any()}


def _labels(layer: TrackedLayer, parent: str, leaf: str, view: UnitView, heads: tuple[int, int, int] | None
            ) -> tuple[Axis, list[str | None] | None]:
    if layer.expert is not None:
        return _expert_labels(layer, view)
    if view == "experts":
        return "row", None
    out, n_in, bias = layer.shape.out_features, layer.shape.in_features, layer.shape.has_bias
    is_attention = parent.rpartition(".")[2] in _ATTENTION_PARENTS
    writes_residual = leaf in _MLP_OUT or leaf in _ATTN_OUT or leaf == "c_proj"
    if view == "residual":
        if not writes_residual:
            return "row", None
        return "row", [f"{_block(layer.name)}:dim{d}" for d in range(out)]
    if leaf in _MLP_IN:
        return "row", [f"{parent}:{n}" for n in range(out)]
    if leaf in _MLP_OUT or (leaf == "c_proj" and not is_attention):
        return "column", [f"{parent}:{n}" for n in range(n_in)] + [None] * bias
    if is_attention and heads is not None and _fits_heads(leaf, out, n_in, heads):
        n_heads, n_kv, head_dim = heads
        if leaf in _ATTN_OUT or leaf == "c_proj":
            return "column", [f"{parent}:head{k // head_dim}" for k in range(n_in)] + [None] * bias
        if leaf == "c_attn":  # GPT-2: [q | k | v], each n_heads × head_dim rows
            return "row", [f"{parent}:head{(k % (n_heads * head_dim)) // head_dim}" for k in range(out)]
        if leaf == "q_proj" or n_kv == n_heads:
            return "row", [f"{parent}:head{k // head_dim}" for k in range(out)]
        return "row", [f"{parent}:kv{k // head_dim}" for k in range(out)]
    return "row", [f"{layer.name}:row{k}" for k in range(out)]


def _expert_labels(layer: TrackedLayer, view: UnitView) -> tuple[Axis, list[str | None] | None]:
    """Units of one expert's projection: its neurons, the expert as a whole, or the residual dims it writes."""
    mlp = layer.module_name.rpartition(".")[0]
    out, n_in, bias = layer.shape.out_features, layer.shape.in_features, layer.shape.has_bias
    down = layer.weight == "down_proj"
    if view == "residual":
        return ("row", [f"{_block(layer.name)}:dim{d}" for d in range(out)]) if down else ("row", None)
    unit = f"{mlp}:expert{layer.expert}"
    if view == "experts":
        return "row", [unit] * out
    if down:
        return "column", [f"{unit}:{n}" for n in range(n_in)] + [None] * bias
    if layer.weight == "up_proj":
        return "row", [f"{unit}:{n}" for n in range(out)]
    half = out // 2  # gate_up_proj: [gate; up] one after the other, or interleaved gate0, up0, gate1, ...
    interleaved = not getattr(layer.module, "is_concatenated", True)
    return "row", [f"{unit}:{k // 2 if interleaved else k % half}" for k in range(out)]


def _fits_heads(leaf: str, out: int, n_in: int, heads: tuple[int, int, int]) -> bool:
    """Whether an attention projection's shape is the one the config's head counts imply."""
    n_heads, n_kv, head_dim = heads
    expected = {"q_proj": out == n_heads * head_dim, "k_proj": out == n_kv * head_dim,
                "v_proj": out == n_kv * head_dim, "c_attn": out == 3 * n_heads * head_dim,
                "o_proj": n_in == n_heads * head_dim, "out_proj": n_in == n_heads * head_dim,
                "c_proj": n_in == n_heads * head_dim}
    return expected.get(leaf, False)


def _attention_heads(config: object) -> tuple[int, int, int] | None:
    """(query heads, key/value heads, head dim) from a Hugging Face config, or None when it does not say."""
    if config is None:
        return None
    n_heads = getattr(config, "num_attention_heads", None) or getattr(config, "n_head", None)
    hidden = getattr(config, "hidden_size", None) or getattr(config, "n_embd", None)
    if not n_heads or not hidden:
        return None
    n_kv = getattr(config, "num_key_value_heads", None) or n_heads
    head_dim = getattr(config, "head_dim", None) or hidden // n_heads
    return int(n_heads), int(n_kv), int(head_dim)


def _block(name: str) -> str:
    """The block a layer belongs to: its name up to the first numbered part (``model.layers.3``)."""
    match = re.match(r"(.*?\.\d+)(?:\.|$)", name)
    return match.group(1) if match else name.rpartition(".")[0]


def _block_number(name: str) -> int | None:
    match = re.search(r"(?:^|\.)(\d+)(?:\.|$)", name.partition(":")[0])
    return int(match.group(1)) if match else None
