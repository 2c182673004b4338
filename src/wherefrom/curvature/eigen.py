"""Eigendecomposition of the Kronecker factors, in float64, with errors that name the broken layer."""

from __future__ import annotations

import torch

from wherefrom.errors import WherefromError


def eigendecompose(name: str, factor_name: str, matrix: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(eigenvalues, eigenvectors) of a symmetric PSD factor; tiny negative eigenvalues (round-off) become 0."""
    if not torch.isfinite(matrix).all():
        raise WherefromError(
            f"layer {name}: factor {factor_name} holds NaN or inf. The model's activations or gradients overflowed "
            "on some sequence: check the model loads correctly, use float32 rather than float16, and look for "
            "corrupt corpus records."
        )
    symmetric = (matrix.double() + matrix.double().T) / 2
    try:
        eigenvalues, eigenvectors = torch.linalg.eigh(symmetric)
    except RuntimeError as exc:  # LAPACK failed to converge
        raise WherefromError(f"layer {name}: eigendecomposition of {factor_name} failed ({exc}); the factor is "
                             "ill-conditioned, which usually means too few tokens were seen for its size.") from exc
    return eigenvalues.clamp_min(0.0), eigenvectors
