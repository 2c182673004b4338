"""Eigendecomposition of the Kronecker factors, in float64, with errors that name the broken layer.

On the CPU the decomposition is LAPACK's divide-and-conquer ``dsyevd`` through scipy (OpenBLAS), which took 26%
less CPU time than torch's (MKL's ``dsyevd``) for the 1536-wide factors of SmolLM2-135M on this project's AMD
machine (0.64 s against 0.86 s, one thread; benchmarks/results/profile-fit.md); on a GPU it is torch's (cuSOLVER).
Both are float64 throughout: the precision policy is unchanged.
"""

from __future__ import annotations

import numpy as np
import scipy.linalg
import torch

from wherefrom.engine.stream import all_finite
from wherefrom.engine.threads import scipy_threads_like_torch
from wherefrom.errors import WherefromError


def eigendecompose(name: str, factor_name: str, matrix: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(eigenvalues, eigenvectors) of a symmetric PSD factor; tiny negative eigenvalues (round-off) become 0."""
    if not all_finite(matrix):
        raise WherefromError(
            f"layer {name}: factor {factor_name} holds NaN or inf. The model's activations or gradients overflowed "
            "on some sequence: check the model loads correctly, use float32 rather than float16, and look for "
            "corrupt corpus records."
        )
    symmetric = (matrix.double() + matrix.double().T) / 2
    try:
        eigenvalues, eigenvectors = _eigh(symmetric)
    except (RuntimeError, np.linalg.LinAlgError) as exc:  # LAPACK failed to converge
        raise WherefromError(f"layer {name}: eigendecomposition of {factor_name} failed ({exc}); the factor is "
                             "ill-conditioned, which usually means too few tokens were seen for its size.") from exc
    return eigenvalues.clamp_min(0.0), eigenvectors


def _eigh(symmetric: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Ascending eigenvalues and orthonormal eigenvectors (columns) of a float64 symmetric matrix."""
    if symmetric.device.type != "cpu":
        return torch.linalg.eigh(symmetric)
    with scipy_threads_like_torch():  # the transpose is the same symmetric matrix, column-major: LAPACK copies nothing
        values, vectors = scipy.linalg.eigh(symmetric.numpy().T, driver="evd", check_finite=False, overwrite_a=True)
    return torch.from_numpy(values), torch.from_numpy(vectors).contiguous()
