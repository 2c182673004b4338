"""The fit's faster routes against independent computations: the CPU eigendecomposition (LAPACK dsyevd, several at once), the
finiteness check from the minimum and maximum, and scipy's BLAS thread count."""

from __future__ import annotations

import pytest
import torch
from threadpoolctl import threadpool_info, threadpool_limits

from wherefrom.curvature.eigen import _AHEAD_PER_WORKER, eigendecompose_each
from wherefrom.engine.stream import all_finite
from wherefrom.engine.threads import scipy_threads
from wherefrom.errors import WherefromError


def test_cpu_eigendecomposition_reconstructs_the_factor_in_float64():
    generator = torch.Generator().manual_seed(0)
    half = torch.randn(300, 40, dtype=torch.float64, generator=generator)
    factor = (half.T @ half / 300).float()  # kept in float32 like the sums
    [(values, vectors)] = eigendecompose_each([("layer", "A", factor)], torch.float64)
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


def test_scipy_blas_runs_with_the_threads_it_is_given():
    def blas_threads() -> set[int]:
        return {pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas"}

    with threadpool_limits(limits=3, user_api="blas"):  # scipy's pool sized apart from torch's
        assert blas_threads() == {3}
        with scipy_threads(1):
            assert blas_threads() == {1}
        assert blas_threads() == {3}


def test_factors_decomposed_side_by_side_come_back_in_order_and_equal_to_one_at_a_time():
    """Several threads: each factor's own decomposition (checked against torch's float64 eigh), in the order given,
    bit for bit what one thread computes; the factors are read lazily, a few ahead of the results; each is
    divided by the divisor in float64."""
    generator = torch.Generator().manual_seed(1)
    factors = []
    for i, dim in enumerate([40, 7, 40, 23, 1, 40, 9] * 3):
        half = torch.randn(3 * dim, dim, dtype=torch.float64, generator=generator)
        factors.append((f"layer{i}", "S", half.T @ half / dim))
    read = []

    def lazily():  # noqa: ANN202
        for factor in factors:
            read.append(factor[0])
            yield factor

    previous = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one_at_a_time = list(eigendecompose_each(factors, torch.float64, divisor=3.0))
        torch.set_num_threads(2)
        results = eigendecompose_each(lazily(), torch.float32, divisor=3.0)
        first = next(results)
        assert len(read) <= 1 + 2 * _AHEAD_PER_WORKER < len(factors)  # the queue runs only a few factors ahead
        side_by_side = [first, *results]
    finally:
        torch.set_num_threads(previous)
    assert len(side_by_side) == len(factors)
    for (_, _, matrix), (values, vectors), (values_1, vectors_1) in zip(factors, side_by_side, one_at_a_time):
        assert vectors.dtype == torch.float32 and values.dtype == torch.float64
        assert torch.equal(values, values_1) and torch.equal(vectors, vectors_1.float())
        assert torch.allclose(values, torch.linalg.eigvalsh(matrix / 3).clamp_min(0), atol=1e-12, rtol=1e-12)
        assert torch.allclose(vectors_1 @ torch.diag(values_1) @ vectors_1.T, matrix / 3, atol=1e-11, rtol=0)


def test_a_factor_that_fails_among_others_names_its_layer():
    bad = torch.eye(5, dtype=torch.float64)
    bad[0, 0] = float("inf")
    factors = [("good", "A", torch.eye(5, dtype=torch.float64))] * 3 + [("model.layers.3.mlp", "S block 1", bad)]
    previous = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        with pytest.raises(WherefromError, match=r"layer model\.layers\.3\.mlp: factor S block 1 holds NaN or inf"):
            list(eigendecompose_each(factors, torch.float32))
    finally:
        torch.set_num_threads(previous)


def test_only_the_upper_triangle_of_a_factor_is_read():
    """The covariance sums' upper triangles are what the fit decomposes (shards of earlier versions summed
    nothing below them): whatever lies below the diagonal, the decomposition is the symmetric matrix's."""
    generator = torch.Generator().manual_seed(2)
    half = torch.randn(60, 20, dtype=torch.float64, generator=generator)
    symmetric = half.T @ half / 60
    upper_only = torch.triu(symmetric)
    upper_only[5, 2] = 1e6  # garbage below the diagonal
    [(values, vectors)] = eigendecompose_each([("layer", "A", upper_only)], torch.float64)
    assert torch.allclose(values, torch.linalg.eigvalsh(symmetric), atol=1e-12, rtol=0)
    assert torch.allclose(vectors @ torch.diag(values) @ vectors.T, symmetric, atol=1e-12, rtol=0)


@pytest.mark.parametrize("dim", [1, 5, 383, 384, 800, 1537])
def test_gram_sums_fill_the_upper_triangle_exactly(dim: int):
    """The covariance sums' banded products against one float64 product, added twice onto a running sum."""
    from wherefrom.curvature.covariance import add_gram_upper

    generator = torch.Generator().manual_seed(dim)
    x, y = (torch.randn(37, dim, generator=generator) for _ in range(2))
    total = torch.zeros(dim, dim)
    add_gram_upper(total, x)
    add_gram_upper(total, y)
    exact = x.double().T @ x.double() + y.double().T @ y.double()
    upper = torch.triu(torch.ones(dim, dim, dtype=torch.bool))
    assert torch.allclose(total.double()[upper], exact[upper], atol=1e-4, rtol=1e-5)


def _routines() -> list:
    from wherefrom.curvature import lapack

    return [lapack._scipy(), *([mkl] if (mkl := lapack._mkl()) is not None else [])]


@pytest.mark.parametrize("chosen", _routines(), ids=lambda routine: routine.name)
def test_each_lapack_build_decomposes_the_upper_triangle_like_torch_in_float64(chosen, monkeypatch):
    """scipy's and (where torch carries it) MKL's dsyevd through ctypes, against torch's float64 eigh: every size
    from one row up, garbage below the diagonal ignored, the divisor applied, the per-thread buffers reused across
    sizes and threads without one factor's leftovers reaching the next."""
    from concurrent.futures import ThreadPoolExecutor

    from wherefrom.curvature import lapack

    monkeypatch.setattr(lapack, "routine", lambda: chosen)
    generator = torch.Generator().manual_seed(3)
    cases = []
    for dim in [1, 2, 7, 130, 7, 130, 64]:
        half = torch.randn(2 * dim, dim, dtype=torch.float64, generator=generator)
        symmetric = half.T @ half
        garbage = torch.triu(symmetric) + torch.tril(torch.full((dim, dim), 1e6, dtype=torch.float64), -1)
        cases.append((symmetric, garbage))
    for threads in (1, 2):
        with ThreadPoolExecutor(2) as pool:
            results = list(pool.map(lambda case: lapack.eigh_upper(case[1], 4.0, torch.float64, threads), cases))
        for (symmetric, _), (values, vectors) in zip(cases, results):
            exact = symmetric / 4.0
            scale = exact.abs().max()
            assert values.dtype == vectors.dtype == torch.float64 and vectors.is_contiguous()
            assert torch.allclose(values, torch.linalg.eigvalsh(exact), atol=1e-12 * scale, rtol=0)
            assert torch.allclose(vectors @ torch.diag(values) @ vectors.T, exact, atol=1e-12 * scale, rtol=0)
            assert torch.allclose(vectors.T @ vectors, torch.eye(len(values), dtype=torch.float64), atol=1e-12)


@pytest.mark.parametrize("dim", [1, 2, 9, 384])
def test_a_covariance_checkpoint_keeps_the_upper_triangle_and_earlier_whole_squares_still_resume(dim: int):
    """The packed upper triangle added back onto a running sum equals the triangle itself, element for element;
    a whole square (what earlier versions saved) is added as it is."""
    from wherefrom.curvature.covariance import add_packed_upper, pack_upper

    generator = torch.Generator().manual_seed(dim)
    saved, running = torch.randn(dim, dim, generator=generator), torch.randn(dim, dim, generator=generator)
    packed = pack_upper(saved)
    assert packed.numel() == dim * (dim + 1) // 2
    total = running.clone()
    add_packed_upper(total, packed)
    upper = torch.triu(torch.ones(dim, dim, dtype=torch.bool))
    assert torch.equal(total[upper], running[upper] + saved[upper]) and torch.equal(total[~upper], running[~upper])
    whole = running.clone()
    add_packed_upper(whole, saved)
    assert torch.equal(whole, running + saved)


def test_one_thread_keeps_no_lapack_buffers_after_its_decompositions():
    """Decomposed on the calling thread (one torch thread), the float64 matrix and LAPACK's workspaces are freed
    once the factors are done, so the passes after the eigendecompositions do not carry them."""
    from wherefrom.curvature import lapack

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        list(eigendecompose_each([("layer", "A", torch.eye(50)), ("layer", "S", torch.eye(70))], torch.float32))
    finally:
        torch.set_num_threads(previous)
    assert lapack._buffers.by_size == {}
