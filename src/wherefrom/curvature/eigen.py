"""Eigendecomposition of the Kronecker factors, in float64, with errors that name the broken layer.

On the CPU the decomposition is LAPACK's divide-and-conquer ``dsyevd`` (MKL's or scipy's, called through ctypes
with the GIL released: `curvature/lapack.py`), several factors at a time, each on one LAPACK thread: ``dsyevd``'s
tridiagonal reduction scales poorly over threads, and two single-threaded decompositions side by side took 2.1 s
where one after another with two threads each took 3.0 s (six 1536-wide and four 576-wide factors, 2 cores;
benchmarks/results/profile-fit.md). On a GPU it is torch's (cuSOLVER), one at a time. Both are float64
throughout: the precision policy is unchanged.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor

import torch

from wherefrom.curvature.lapack import EighFailed, eigh_upper, release_buffers
from wherefrom.engine.stream import all_finite
from wherefrom.engine.threads import scipy_threads
from wherefrom.errors import WherefromError

Factor = tuple[str, str, torch.Tensor]  # layer name, factor name ("A", "S block 2"), a symmetric matrix's upper triangle
_AHEAD_PER_WORKER = 4  # factors queued per worker beyond those being decomposed


def eigendecompose_each(factors: Iterable[Factor], basis_dtype: torch.dtype, divisor: float = 1.0
                        ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """(eigenvalues in float64, eigenvectors in ``basis_dtype``) of each factor divided by ``divisor``, in order.

    On the CPU ``torch.get_num_threads()`` factors are decomposed at once, one LAPACK thread each, taken from a
    queue that runs a few factors ahead of the results: with only one factor ahead a worker sat idle whenever it
    finished small factors while the other was still on a large one (SmolLM2-135M's 150 factors: 44 s, now 30 s;
    benchmarks/results/profile-fit.md). ``factors`` is read only as far as that queue needs; each factor becomes
    float64 in its worker, so only the factors being decomposed have a float64 copy.
    """
    workers = torch.get_num_threads()
    factors = iter(factors)
    first = next(factors, None)
    if first is None:
        return
    if first[2].device.type != "cpu" or workers == 1:
        try:
            with scipy_threads(workers):
                yield from (_decompose(factor, divisor, basis_dtype, workers) for factor in (first, *factors))
        finally:
            release_buffers()  # this thread's LAPACK buffers (a pool's go with its threads)
        return
    with scipy_threads(1), ThreadPoolExecutor(workers, thread_name_prefix="eigh") as pool:
        yield from _in_order(pool, lambda factor: _decompose(factor, divisor, basis_dtype, 1), [first], factors,
                             _AHEAD_PER_WORKER * workers)


def _in_order(pool: ThreadPoolExecutor, work: Callable, first: list, rest: Iterator, in_flight: int) -> Iterator:
    """work(item) for each item of first + rest, in order, with at most ``in_flight`` + 1 submitted at a time."""
    pending: deque[Future] = deque(pool.submit(work, item) for item in first)
    for item in rest:
        pending.append(pool.submit(work, item))
        if len(pending) > in_flight:
            yield pending.popleft().result()
    while pending:
        yield pending.popleft().result()


def _decompose(factor: Factor, divisor: float, basis_dtype: torch.dtype, threads: int
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """Eigenvalues (float64, clamped at 0) and eigenvectors (``basis_dtype``, row-major) of one factor / divisor."""
    name, factor_name, matrix = factor
    if not all_finite(matrix):
        raise WherefromError(
            f"layer {name}: factor {factor_name} holds NaN or inf. The model's activations or gradients overflowed "
            "on some sequence: check the model loads correctly, use float32 rather than float16, and look for "
            "corrupt corpus records."
        )
    try:
        if matrix.device.type == "cpu":
            eigenvalues, eigenvectors = eigh_upper(matrix, divisor, basis_dtype, threads)
        else:  # LAPACK reads one triangle: the other need not be filled in
            eigenvalues, vectors = torch.linalg.eigh(_float64_divided(matrix, divisor), UPLO="U")
            eigenvectors = torch.empty(vectors.shape, dtype=basis_dtype, device=vectors.device).copy_(vectors)
    except (EighFailed, torch.linalg.LinAlgError) as exc:
        raise WherefromError(f"layer {name}: eigendecomposition of {factor_name} failed ({exc}); the factor is "
                             "ill-conditioned, which usually means too few tokens were seen for its size.") from exc
    return eigenvalues.clamp_min(0.0), eigenvectors


def _float64_divided(matrix: torch.Tensor, divisor: float) -> torch.Tensor:
    """matrix / divisor in float64, never changing ``matrix`` itself."""
    converted = matrix.double()
    return converted.div_(divisor) if converted is not matrix else converted / divisor
