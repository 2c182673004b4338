"""Registry of layer types that wherefrom can track.

A tracked layer computes s = W̄ ā per token, with ā = (a, 1) when it has a bias (eq. 12 of Grosse et al.).
Everything downstream works with W̄ as an [out, in(+1)] matrix; a layer type only says how its module maps to
that form. Supporting a new layer type is one small class decorated with ``@register``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
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
    """How one kind of module exposes W̄ = [W | b] as an [out, in(+1)] matrix."""

    module_types: ClassVar[tuple[type, ...]] = ()

    @staticmethod
    def shape(module: nn.Module) -> LayerShape:
        """The layer's shape."""
        raise NotImplementedError

    @staticmethod
    def weight_matrix(module: nn.Module) -> torch.Tensor:
        """The weight as an [out, in] matrix (without bias)."""
        raise NotImplementedError

    @classmethod
    def parameter_gradient(cls, module: nn.Module) -> torch.Tensor:
        """The module's autograd gradient (``.grad``) as W̄'s [out, in(+1)] gradient; used by tests and checks."""
        grad = cls.weight_matrix_grad(module)
        if module.bias is not None and module.bias.grad is not None:
            grad = torch.cat([grad, module.bias.grad[:, None]], dim=1)
        return grad

    @staticmethod
    def weight_matrix_grad(module: nn.Module) -> torch.Tensor:
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

    @staticmethod
    def weight_matrix(module: nn.Module) -> torch.Tensor:
        return module.weight

    @staticmethod
    def weight_matrix_grad(module: nn.Module) -> torch.Tensor:
        return module.weight.grad


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

    @staticmethod
    def weight_matrix(module: nn.Module) -> torch.Tensor:
        return module.weight.T

    @staticmethod
    def weight_matrix_grad(module: nn.Module) -> torch.Tensor:
        return module.weight.grad.T

