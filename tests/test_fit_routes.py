"""The fit's faster routes against independent computations: the CPU eigendecomposition (scipy's dsyevd), the
finiteness check from the minimum and maximum, and scipy's BLAS thread count."""

from __future__ import annotations

import pytest
import torch
from threadpoolctl import threadpool_info, threadpool_limits

from wherefrom.curvature.eigen import eigendecompose
from wherefrom.engine.stream import all_finite
from wherefrom.engine.threads import scipy_threads_like_torch


def test_cpu_eigendecomposition_reconstructs_the_factor_in_float64():
    generator = torch.Generator().manual_seed(0)
    half = torch.randn(300, 40, dtype=torch.float64, generator=generator)
    factor = (half.T @ half / 300).float()  # kept in float32 like the sums
    values, vectors = eigendecompose("layer", "A", factor)
    exact = factor.double()
    assert values.dtype == vectors.dtype == torch.float64 and vectors.is_contiguous()
    assert torch.allclose(vectors @ torch.diag(values) @ vectors.T, exact, atol=1e-13, rtol=0)
    assert torch.allclose(vectors.T @ vectors, torch.eye(40, dtype=torch.float64), atol=1e-13, rtol=0)
    assert torch.allclose(values, torch.linalg.eigvalsh(exact), atol=1e-13, rtol=0)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_all_finite_sees_every_non_finite_value(bad: float):
    logits = torch.randn(2, 3, 50)
    assert all_finite(logits) and all_finite(torch.empty(0))
    logits[1, 2, 17] = bad
    assert not all_finite(logits) and not torch.isfinite(logits).all()


def test_scipy_blas_runs_with_torchs_thread_count():
    def blas_threads() -> set[int]:
        return {pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas"}

    previous = torch.get_num_threads()
    with threadpool_limits(limits=3, user_api="blas"):  # scipy's pool sized apart from torch's
        torch.set_num_threads(1)
        try:
            assert blas_threads() == {3}
            with scipy_threads_like_torch():
                assert blas_threads() == {1}
            assert blas_threads() == {3}
        finally:
            torch.set_num_threads(previous)
