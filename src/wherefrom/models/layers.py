"""Registry of layer types that wherefrom can track.

A tracked layer computes s = W̄ ā per token, with ā = (a, 1) when it has a bias (eq. 12 of Grosse et al.).
Everything downstream works with W̄ as an [out, in(+1)] matrix; a layer type only says how its module maps to
that form. Supporting a new layer type is one small class decorated with ``@register``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from torch import nn


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


class LayerType:
    """One kind of module computing s = W̄ ā per token: what it takes to track it is its shape (the hooks see ā and s)."""

    module_types: ClassVar[tuple[type, ...]] = ()

    @staticmethod
    def shape(module: nn.Module) -> LayerShape:
        """The layer's shape."""
        raise NotImplementedError


_REGISTRY: list[type[LayerType]] = []


def register(cls: type[LayerType]) -> type[LayerType]:
    """Class decorator adding a layer type to the registry."""
    _REGISTRY.append(cls)
    return cls


def layer_type_of(module: nn.Module) -> type[LayerType] | None:
    """The registered layer type of a module, or None when wherefrom cannot track it."""
    for cls in _REGISTRY:
        if isinstance(module, cls.module_types):
            return cls
    return None


@register
class LinearLayer(LayerType):
    """``torch.nn.Linear``: y = x Wᵀ + b with W of shape [out, in]."""

    module_types = (nn.Linear,)

    @staticmethod
    def shape(module: nn.Module) -> LayerShape:
        return LayerShape(module.in_features, module.out_features, module.bias is not None)


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

    @staticmethod
    def shape(module: nn.Module) -> LayerShape:
        n_in, n_out = module.weight.shape
        return LayerShape(n_in, n_out, module.bias is not None)


