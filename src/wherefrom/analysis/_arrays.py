"""Conversion of score tensors and array-likes to numpy, shared by the analysis modules."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch


def as_numpy(values: Any, dtype: type = np.float64) -> np.ndarray:
    """``values`` (torch tensor on any device, numpy array or nested sequence) as a numpy array of ``dtype``."""
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu()
        if values.is_floating_point():
            values = values.double()
        values = values.numpy()
    return np.asarray(values, dtype=dtype)


def as_vector(values: Any, what: str) -> np.ndarray:
    """``values`` as a 1-D float64 array; anything else (e.g. a whole [n_queries, n_sequences] matrix) is an error."""
    vector = as_numpy(values)
    if vector.ndim != 1:
        raise ValueError(f"{what} must be one score per sequence (1-D), got shape {vector.shape}: pass scores[query]")
    return vector
