"""The one-bit CountSketch behind the index against its exact statistics, and the host's int8 contraction against
float64."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

from wherefrom.index.bitplanes import QUERY_BITS
from wherefrom.index.sketch import count_sketch, layer_hashes, sign_bits, unpack_by_shifts, unpack_signs
from wherefrom.index.store import GradientIndex


def test_the_sketch_estimates_inner_products_without_bias_and_with_countsketchs_variance():
    generator = torch.Generator().manual_seed(0)
    n, buckets, seeds = 3000, 256, 500
    x = torch.randn(n, generator=generator, dtype=torch.float64)
    y = 0.3 * x + torch.randn(n, generator=generator, dtype=torch.float64)
    estimates = torch.tensor([float(count_sketch(x[None], buckets, seed).double()
                                    @ count_sketch(y[None], buckets, seed).double().T) for seed in range(seeds)],
                             dtype=torch.float64)
    exact = float(x @ y)
    # Var⟨Sx, Sy⟩ = (‖x‖²‖y‖² + ⟨x,y⟩² − 2 Σ x_i² y_i²) / D for a CountSketch into D buckets
    variance = (float(x @ x) * float(y @ y) + exact**2 - 2 * float((x**2 * y**2).sum())) / buckets
    assert abs(float(estimates.mean()) - exact) < 4 * (variance / seeds) ** 0.5
    assert 0.8 < float(estimates.var()) / variance < 1.2


def test_each_entry_lands_in_one_bucket_with_a_sign():
    values = torch.eye(50)
    sketched = count_sketch(values, 7, seed=3)
    assert ((sketched != 0).sum(1) == 1).all() and set(sketched.abs().sum(1).tolist()) == {1.0}
    assert torch.equal(count_sketch(values, 7, seed=3), sketched)  # a hash of the position: the same every time
    assert not torch.equal(count_sketch(values, 7, seed=4), sketched)
    kept = layer_hashes(50, 7, 3, torch.device("cpu"))  # a layer's hashes kept (int32 buckets, int8 signs)
    assert torch.equal(count_sketch(values, 7, 3, kept), sketched)
    rows = torch.full((50, 7), 0.5)  # added into rows being built: what was there stays
    for hashes in (None, kept):
        added = count_sketch(values, 7, 3, hashes, out=rows.clone())
        assert torch.equal(added, sketched + 0.5)


def test_the_damped_square_norm_matches_float64():
    """Σ x̃² / (Λ + λ) from float32 gradients, against the same sum in float64."""
    from wherefrom.scoring.contract import damped_square_norm

    generator = torch.Generator().manual_seed(5)
    rotated = torch.randn(4, 30, 20, generator=generator) * torch.logspace(-3, 3, 20)
    eigenvalues = torch.rand(30, 20, generator=generator) * 10
    exact = (rotated.double().square() / (eigenvalues.double() + 0.3)).flatten(1).sum(1)
    norm = damped_square_norm(rotated, eigenvalues, 0.3)
    assert norm.dtype == torch.float64 and torch.allclose(norm, exact, rtol=1e-6, atol=0)
    assert torch.allclose(damped_square_norm(rotated.double(), eigenvalues, 0.3), exact, rtol=1e-14, atol=0)


def test_signs_and_their_scale_estimate_inner_products_without_bias():
    """σ√(π/2)·Σ x_i sign(y_i) against ⟨x, y⟩ for sketched pairs, over many sketches: unbiased, and with π/2 times
    the variance of the sketch's exact values (jointly Gaussian buckets)."""
    generator = torch.Generator().manual_seed(2)
    n, buckets, seeds = 20000, 1024, 300
    x = torch.randn(n, generator=generator, dtype=torch.float64)
    y = 0.2 * x + torch.randn(n, generator=generator, dtype=torch.float64)
    from_signs, from_values = [], []
    for seed in range(seeds):
        sx, sy = count_sketch(x[None], buckets, seed), count_sketch(y[None], buckets, seed)
        packed, scale = sign_bits(sy)
        signs = unpack_signs(packed).double() * 2 - 1
        from_signs.append(float(sx.double() @ signs.T * scale.double()))
        from_values.append(float(sx.double() @ sy.double().T))
    exact = float(x @ y)
    from_signs, from_values = torch.tensor(from_signs), torch.tensor(from_values)
    assert abs(float(from_signs.mean()) - exact) < 4 * float(from_signs.std()) / seeds**0.5
    ratio = float((from_signs - exact).var() / (from_values - exact).var())
    assert 1.2 < ratio < 2.0  # π/2 ≈ 1.57


def test_bits_are_packed_most_significant_first_and_unpack_to_the_signs():
    rows = torch.tensor([[1.0, -2.0, 3.0, -4.0, -5.0, -6.0, 7.0, 0.5, -1.0] + [-1.0] * 7])
    packed, scale = sign_bits(rows)
    assert packed.tolist() == [[0b10100011, 0]]
    assert torch.equal(unpack_signs(packed), (rows > 0).to(torch.int8))
    many = torch.randint(0, 256, (5, 40), dtype=torch.uint8)
    assert torch.equal(unpack_by_shifts(many), unpack_signs(many))  # a GPU's unpacking, here on the host
    torch.testing.assert_close(scale, rows.pow(2).mean(1).sqrt() * (torch.pi / 2) ** 0.5)


def test_int8_rows_are_contracted_like_float64(tmp_path):
    """The host's weight-only int8 kernel (whole rows, and a column range whose width is no multiple of its block),
    against float64 products: within its bfloat16 rounding."""
    generator = torch.Generator().manual_seed(1)
    rows = torch.randint(-127, 128, (37, 192), generator=generator, dtype=torch.int8)
    scales = torch.rand(37, generator=generator) + 0.5
    np.save(tmp_path / "gradients.npy", rows.numpy())
    index = GradientIndex(tmp_path, {}, {}, np.load(tmp_path / "gradients.npy", mmap_mode="c"), scales.numpy(), None)
    queries = torch.randn(3, 192, generator=generator)
    got = index.contract(queries, [(0, 192), (5, 100)])
    for i, (first, last) in enumerate([(0, 192), (5, 100)]):
        expected = queries[:, first:last].double() @ rows[:, first:last].double().T * scales.double()
        torch.testing.assert_close(got[i].double(), expected, rtol=0, atol=5e-3 * float(expected.abs().max()))


def _sketch_index(tmp_path, n: int, buckets: int, generator: torch.Generator) -> tuple[GradientIndex, torch.Tensor]:
    """An index of random packed sign bits and scales, and its rows' signs ±1 [n, buckets] float64."""
    packed = torch.randint(0, 256, (n, buckets // 8), generator=generator, dtype=torch.uint8)
    np.save(tmp_path / "gradients.npy", packed.numpy())
    scales = torch.rand(n, generator=generator) + 0.5
    index = GradientIndex(tmp_path, {"compression": "sketch", "values": buckets}, {},
                          np.load(tmp_path / "gradients.npy", mmap_mode="c"), scales.numpy(), None)
    signs = unpack_signs(packed).double() * 2 - 1
    return index, signs * scales.double()[:, None]


@pytest.mark.parametrize("buckets", [1024, 66048])  # one block of the kernel's words; two, the second short
def test_sign_bits_are_contracted_by_bit_planes_like_float64(tmp_path, monkeypatch, buckets):
    """The bit-plane kernel (numba) against float64 products of the query with the signs times the scales: the
    error is the query's rounding to QUERY_BITS bits alone (at most half a step per bucket), and nothing when the
    query lies on that grid; also with several query rows (per-layer scores) in one pass. 37 rows read 5 at a time:
    the kernel's pairs of rows, odd ones, and a short last chunk."""
    pytest.importorskip("numba")
    from wherefrom.index import store

    monkeypatch.setattr(store, "_PLANE_CHUNK_BYTES", 5 * buckets // 8)
    generator = torch.Generator().manual_seed(3)
    index, signed = _sketch_index(tmp_path, 37, buckets, generator)
    queries = torch.randn(2, buckets, generator=generator) * 3
    got = index.contract(queries)[0].double()
    expected = queries.double() @ signed.T
    top = 2 ** (QUERY_BITS - 1) - 1  # the largest integer of the query
    step = queries.abs().amax(1, keepdim=True).double() / top
    bound = step / 2 * signed.abs().sum(1) + 1e-6 * expected.abs()  # the query's rounding, then float32's
    assert ((got - expected).abs() <= bound).all()
    assert not torch.equal(got, expected)  # the rounding is there, and the test would see a wrong sum
    on_grid = torch.randint(-top, top + 1, (2, buckets), generator=generator).double()
    on_grid[:, 0] = top  # the largest magnitude: the grid's step is then 1
    torch.testing.assert_close(index.contract(on_grid.float())[0].double(), on_grid @ signed.T, rtol=1e-7, atol=0)
    per_layer = torch.stack([queries, -0.5 * queries])  # [n_ranges, Q, values], every range the whole row
    got = index.contract(per_layer, [(0, buckets), (0, buckets)]).double()
    assert ((got[0] - expected).abs() <= bound).all() and ((got[1] + 0.5 * expected).abs() <= bound).all()


def test_without_numba_or_with_many_queries_the_bits_are_unpacked_for_the_int8_kernel(tmp_path, monkeypatch):
    """The path without numba (and past PLANE_QUERY_ROWS query rows): unpacked bits, torch's int8 kernel, within
    its bfloat16 rounding of float64."""
    from wherefrom.index import store

    generator = torch.Generator().manual_seed(4)
    index, signed = _sketch_index(tmp_path, 21, 512, generator)
    queries = torch.randn(store.PLANE_QUERY_ROWS + 1, 512, generator=generator)
    expected = queries.double() @ signed.T
    tolerance = 1e-2 * float(expected.abs().max())
    torch.testing.assert_close(index.contract(queries)[0].double(), expected, rtol=0, atol=tolerance)
    monkeypatch.setattr(store, "plane_kernel", lambda: None)
    torch.testing.assert_close(index.contract(queries[:1])[0].double(), expected[:1], rtol=0, atol=tolerance)


def test_the_explorers_warm_up_loads_the_kernel_a_question_uses(tmp_path):
    """In a fresh process (numba's kernels not yet loaded): the warm-up, which reads only the index's first rows,
    loads the bit-plane kernel for the argument types a question's contraction passes it, so the question loads
    nothing more; and it leaves the index whole."""
    pytest.importorskip("numba")
    _sketch_index(tmp_path, 37, 1024, torch.Generator().manual_seed(6))  # writes gradients.npy
    program = f"""
import numpy as np, torch
from wherefrom.explorer.warmup import warm_up
from wherefrom.index.plane_kernel import plane_counts
from wherefrom.index.store import GradientIndex
index = GradientIndex({str(tmp_path)!r}, {{"compression": "sketch", "values": 1024}}, {{}},
                      np.load({str(tmp_path / "gradients.npy")!r}, mmap_mode="c"), np.ones(37, np.float32), None)
assert not plane_counts.signatures
warm_up(index)
loaded = list(plane_counts.signatures)
index.contract(torch.randn(1, 1024))
print(len(loaded), plane_counts.signatures == loaded, index.n_sequences)
"""
    result = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["1", "True", "37"]
