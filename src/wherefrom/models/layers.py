"""Registry of layer types that wherefrom can track.

A tracked layer computes s = W̄ ā per token, with ā = (a, 1) when it has a bias (eq. 12 of Grosse et al.).
Everything downstream works with W̄ as an [out, in(+1)] matrix; a layer type only says how its module maps to
that form: which parameter holds W (one expert's slice of a fused 3-D parameter, or the whole of a 2-D one),
whether it is stored transposed, and which parameter holds b. Supporting a new layer type is one small class
decorated with ``@register``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode


@dataclass(frozen=True)
class LayerShape:
    """The [out, in] shape of a layer's W̄, before the bias column."""

    in_features: int
    out_features: int
    has_bias: bool

    @property
    def in_dim(self) -> int:
        """Width of ā, the homogeneous input (in_features + 1 with a bias)."""
        return self.in_features + int(self.has_bias)


@dataclass(frozen=True)
class TrackedLayer:
    """A W̄ wherefrom tracks: its name, module, layer type and shape, and where W̄ lives in the module's parameters.

    W = ``module.<weight>`` (``[expert]`` when ``expert`` is set), transposed when ``transposed`` (stored [in, out]);
    b = ``module.<bias>`` likewise, when the layer has one.
    """

    name: str
    module: nn.Module
    layer_type: type[LayerType]
    shape: LayerShape
    weight: str = "weight"
    bias: str | None = None
    transposed: bool = False
    expert: int | None = None

    @property
    def module_name(self) -> str:
        """The full name of the module holding W̄ (an expert's layer is named ``<module>.<expert>.<parameter>``)."""
        return self.name if self.expert is None else self.name.rsplit(".", 2)[0]

    @property
    def parameter_names(self) -> tuple[str, ...]:
        """The module's parameters that hold W̄ (weight, then bias)."""
        return (self.weight,) + ((self.bias,) if self.shape.has_bias else ())

    def wbar_of(self, tensors: dict[str, torch.Tensor]) -> torch.Tensor:
        """W̄ [..., out, in(+1)] from parameter-shaped tensors keyed by :attr:`parameter_names` (values, gradients or
        Jacobians, with any leading dimensions); an expert's slice is taken from the expert dimension."""
        W, b = tensors[self.weight], tensors.get(self.bias) if self.shape.has_bias else None
        if self.expert is not None:
            W = W.select(-3, self.expert)
            b = b.select(-2, self.expert) if b is not None else None
        W = W.transpose(-1, -2) if self.transposed else W
        return W if b is None else torch.cat([W, b[..., None]], dim=-1)

    def current_wbar(self) -> torch.Tensor:
        """The layer's W̄ now: [out, in(+1)], detached."""
        return self.wbar_of({n: getattr(self.module, n).detach() for n in self.parameter_names})

    def split_wbar(self, Wbar: torch.Tensor) -> dict[str, torch.Tensor]:
        """Inverse of :meth:`wbar_of` for one layer: W̄ [..., out, in(+1)] → its weight (and bias) in storage layout,
        one expert's slice for an expert."""
        W = Wbar[..., :self.shape.in_features]
        parts = {self.weight: W.transpose(-1, -2) if self.transposed else W}
        if self.shape.has_bias:
            parts[self.bias] = Wbar[..., self.shape.in_features]
        return parts


# take(layer name, its input a [..., in], its output s [..., out], the token rows they cover (None: all tokens)):
# what a layer type hands the engine during a forward pass.
Take = Callable[[str, torch.Tensor, torch.Tensor, "torch.Tensor | None"], None]


class LayerType:
    """One kind of module computing s = W̄ ā per token: what it takes to track it is where its W̄ lives and how
    the engine sees each W̄'s input a and output s."""

    module_types: ClassVar[tuple[type, ...]] = ()

    @classmethod
    def matches(cls, module: nn.Module) -> bool:
        """Whether ``module`` is of this type."""
        return isinstance(module, cls.module_types)

    @classmethod
    def tracked(cls, name: str, module: nn.Module) -> list[TrackedLayer]:
        """The W̄ matrices ``module`` holds (one for a plain layer, two per expert for fused experts)."""
        raise NotImplementedError

    @classmethod
    def attach(cls, module: nn.Module, layers: list[TrackedLayer], take: Take) -> Callable[[], None]:
        """Arrange for ``take`` to see each of ``layers``' a and s whenever ``module`` runs; returns the undo.
        The default, for a module that is one layer: a forward hook."""
        (layer,) = layers
        handle = module.register_forward_hook(lambda _m, inputs, output: take(layer.name, inputs[0], output, None))
        return handle.remove


def replace_forward(module: nn.Module, forward: Callable[..., object]) -> Callable[[], None]:
    """Run ``forward`` in place of ``module.forward`` (an instance attribute, so hooks still run); returns the undo."""
    previous = module.__dict__.get("forward")
    module.forward = forward

    def undo() -> None:
        if previous is None:
            del module.forward
        else:
            module.forward = previous

    return undo


def watch_linear(module: nn.Module, layer: TrackedLayer, take: Take, output_is_y: bool = False
                 ) -> Callable[[], None]:
    """For a module whose forward does more than its linear map (a router returning logits and top-k, an
    nn.Linear subclass returning a tuple): hand ``take`` the input and output of the first F.linear call in the
    forward whose weight has the layer's shape (routers may cast x and W to float32 first, so not by identity).
    With ``output_is_y``, an output that is a tensor of the layer's width is y itself, taken with the input."""
    original = module.forward

    def forward(*args: torch.Tensor, **kwargs: object) -> object:
        seen: list[tuple[torch.Tensor, torch.Tensor]] = []
        with _FirstLinear(tuple(getattr(module, layer.weight).shape), lambda x, s: seen.append((x, s))):
            output = original(*args, **kwargs)
        if output_is_y and args and isinstance(output, torch.Tensor) and output.shape[-1] == layer.shape.out_features:
            take(layer.name, args[0], output, None)
        elif seen:
            take(layer.name, *seen[0], None)
        return output

    return replace_forward(module, forward)


class _FirstLinear(TorchFunctionMode):
    """Hands the input and output of the first F.linear call with a weight of ``shape`` to ``seen``."""

    def __init__(self, shape: tuple[int, ...], seen: Callable[[torch.Tensor, torch.Tensor], None]) -> None:
        super().__init__()
        self.shape, self.seen, self.done = shape, seen, False

    def __torch_function__(self, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN204 - torch's protocol
        result = func(*args, **(kwargs or {}))
        if not self.done and func is F.linear and tuple(args[1].shape) == self.shape:
            self.done = True
            self.seen(args[0], result)
        return result


_REGISTRY: list[type[LayerType]] = []


def register(cls: type[LayerType]) -> type[LayerType]:
    """Class decorator adding a layer type to the registry."""
    _REGISTRY.append(cls)
    return cls


def layer_type_of(module: nn.Module) -> type[LayerType] | None:
    """The registered layer type of a module, or None when wherefrom cannot track it."""
    for cls in _REGISTRY:
        if cls.matches(module):
            return cls
    return None


@register
class LinearLayer(LayerType):
    """``torch.nn.Linear``: y = x Wᵀ + b with W of shape [out, in]."""

    module_types = (nn.Linear,)

    @classmethod
    def tracked(cls, name: str, module: nn.Module) -> list[TrackedLayer]:
        shape = LayerShape(module.in_features, module.out_features, module.bias is not None)
        return [TrackedLayer(name, module, cls, shape, bias="bias")]

    @classmethod
    def attach(cls, module: nn.Module, layers: list[TrackedLayer], take: Take) -> Callable[[], None]:
        """A forward hook. A subclass with a forward of its own (Falcon's, Llama 4's router) is watched for its
        F.linear call too: its output is y itself when it is a tensor of the layer's width, else that call's."""
        if type(module).forward is nn.Linear.forward:
            return super().attach(module, layers, take)
        return watch_linear(module, layers[0], take, output_is_y=True)


def _conv1d_types() -> tuple[type, ...]:
    try:
        from transformers.pytorch_utils import Conv1D
    except ImportError:  # transformers without GPT-2's Conv1D
        return ()
    return (Conv1D,)


@register
class Conv1DLayer(LayerType):
    """GPT-2's ``Conv1D``: y = x W + b with W of shape [in, out] (a transposed linear layer)."""

    module_types = _conv1d_types()

    @classmethod
    def tracked(cls, name: str, module: nn.Module) -> list[TrackedLayer]:
        n_in, n_out = module.weight.shape
        return [TrackedLayer(name, module, cls, LayerShape(n_in, n_out, module.bias is not None), bias="bias",
                             transposed=True)]
