"""The physical floor of EK-FAC on the benchmark workload: the work no implementation can skip.

EK-FAC over N training sequences needs three passes of forward + backward over the corpus (covariances, the
eigenvalue correction, the training gradients for scoring) and the eigendecompositions of the Kronecker factors.
This script times exactly that, with nothing else:
- pass: one forward and one backward per batch, the backward computing gradients with respect to the tracked
  MLP layers' outputs only (parameters frozen, the embedding output requires grad so autograd walks the whole
  network, no weight gradient is formed);
- eigh: float64 LAPACK dsyevd of a random symmetric matrix of each factor's shape (A: in x in per distinct
  layer input, so gate_proj and up_proj share one; S: out x out per layer): on the CPU as many side by side as
  torch has threads, one LAPACK thread each (wherefrom's own route, the fastest float64 one measured there:
  MKL's on Intel CPUs, scipy's elsewhere); on a GPU torch's, one at a time.
Writes a JSON with the timings: fit_s = 2 passes + eigh, score_s = 1 pass, total_s = 3 passes + eigh, the same
in CPU seconds of the process (fit_cpu_s, score_cpu_s, total_cpu_s), and the tokens per second of one pass.

The passes and eigh are not all of EK-FAC's arithmetic: it must also form the covariance products, rotate every
token's ā and Ds into the eigenbases for the correction, precondition the queries and contract them with the
training gradients. With --products (the default) these are timed too, on random tensors of the workload's shapes
(batch by batch, as many batches as the corpus has), and reported as ekfac_fit_s / ekfac_score_s /
ekfac_total_s = the floor above plus them (products_s per kind), the line "floor + EK-FAC products":
- covariance: per batch, ā āᵀ once per distinct layer input and Ds Dsᵀ per layer, [B·T, d] by [B·T, d] (the
  symmetric rank-k product, half a matrix product's work, on the CPU; a matrix product on a GPU);
- correction: per batch and layer, ā Q_A (once per distinct input) and Ds Q_S, the per-sequence products
  (Ds Q_S)ᵀ (ā Q_A) [B, out, in], and their squares summed;
- precondition: per layer, Q_S R Q_Aᵀ for the queries' [Q, out, in] (R: the damped rotated query gradients);
- contraction: per batch and layer, the per-sequence products Dsᵀ ā [B, out, in] and their inner products
  with the Q preconditioned queries.

  python benchmarks/floor.py --model DIR --corpus corpus.jsonl --out floor.json [--batch-size 8]
      [--device cuda --dtype bfloat16] [--passes 3] [--eigh-once-per-size] [--no-products] [--queries 4]

On a GPU every timing synchronises the device first, and one untimed batch warms the kernels up. With
--eigh-once-per-size each distinct factor size is decomposed once and its time counted for every factor of
that size (the decompositions of one size cost the same; this saves device time).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from scipy.linalg import blas
from threadpoolctl import threadpool_limits
from transformers import AutoModelForCausalLM

from benchmarks.workload import corpus_token_ids, mlp_linear_names

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed_pass(
    model: torch.nn.Module, tracked: list[torch.nn.Module], batches: list[torch.Tensor]
) -> tuple[float, float]:
    """Wall and CPU seconds for forward + backward (to the tracked layers' outputs only) over all batches."""
    outputs: list[torch.Tensor] = []
    handles = [module.register_forward_hook(lambda _m, _i, out: outputs.append(out)) for module in tracked]
    embed = model.get_input_embeddings()
    device = batches[0].device
    synchronize(device)
    start, cpu_start = time.perf_counter(), time.process_time()
    for input_ids in batches:
        outputs.clear()
        inputs_embeds = embed(input_ids).detach().requires_grad_(True)
        logits = model(inputs_embeds=inputs_embeds).logits
        loss = F.cross_entropy(
            logits[:, :-1].reshape(-1, logits.size(-1)).float(), input_ids[:, 1:].reshape(-1), reduction="sum"
        )
        torch.autograd.grad(loss, outputs)
    synchronize(device)
    elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    for handle in handles:
        handle.remove()
    return elapsed, cpu


def factor_sizes(model: torch.nn.Module, names: list[str]) -> list[int]:
    """Side lengths of the Kronecker factors: one A per distinct layer input, one S per layer."""
    modules = dict(model.named_modules())
    sizes = []
    shared_inputs: set[str] = set()
    for name in names:
        layer = modules[name]
        block, projection = name.rsplit(".", 1)
        if projection in ("gate_proj", "up_proj"):
            if block not in shared_inputs:
                shared_inputs.add(block)
                sizes.append(layer.in_features)
        else:
            sizes.append(layer.in_features)
        sizes.append(layer.out_features)
    return sizes


def timed_eigendecompositions(
    sizes: list[int], device: torch.device, once_per_size: bool, seed: int = 0
) -> tuple[float, float]:
    """Wall and CPU seconds for float64 eigh of one random symmetric positive matrix of each size, on `device`.

    On the CPU as many run side by side as torch has threads, one LAPACK thread each, through wherefrom's own
    dsyevd route (`curvature/lapack.py`: the fastest float64 route measured, benchmarks/results/profile-fit.md);
    on a GPU torch's, one at a time. With `once_per_size` each distinct size is timed once (on the CPU, one matrix
    per thread at once) and counted as many times as it occurs.
    """
    generator = torch.Generator().manual_seed(seed)
    counts = {size: sizes.count(size) for size in sizes} if once_per_size else None
    matrices = {}
    for size in dict.fromkeys(sizes):
        half = torch.randn(size, size, dtype=torch.float64, generator=generator).to(device)
        matrices[size] = half @ half.T / size
    if device.type == "cpu":
        at_once, floats = torch.get_num_threads(), {size: matrix.float() for size, matrix in matrices.items()}
        if counts is None:
            return _timed_side_by_side([floats[size] for size in sizes])
        timings = {size: _timed_side_by_side([floats[size]] * at_once) for size in counts}
        return tuple(sum(timings[size][i] * counts[size] / at_once for size in counts) for i in range(2))
    torch.linalg.eigh(torch.eye(8, dtype=torch.float64, device=device))  # load cuSOLVER outside the timings
    total = total_cpu = 0.0
    for size in counts or sizes:
        synchronize(device)
        start, cpu_start = time.perf_counter(), time.process_time()
        torch.linalg.eigh(matrices[size])
        synchronize(device)
        total += (time.perf_counter() - start) * (counts[size] if counts else 1)
        total_cpu += (time.process_time() - cpu_start) * (counts[size] if counts else 1)
    return total, total_cpu


def _timed_side_by_side(factors: list[torch.Tensor]) -> tuple[float, float]:
    """Wall and CPU seconds of the fit's CPU eigendecompositions of these float32 factors (as its sums are kept)."""
    from wherefrom.curvature.eigen import eigendecompose_each

    start, cpu_start = time.perf_counter(), time.process_time()
    for _ in eigendecompose_each((("floor", "A", factor) for factor in factors), torch.float32):
        pass
    return time.perf_counter() - start, time.process_time() - cpu_start


def layer_shapes(model: torch.nn.Module, names: list[str]) -> list[tuple[int, int, bool]]:
    """(in, out, shares its input with the layer before) per tracked layer: gate_proj and up_proj read one ā."""
    modules = dict(model.named_modules())
    shapes, seen_blocks = [], set()
    for name in names:
        block, projection = name.rsplit(".", 1)
        shared = projection in ("gate_proj", "up_proj") and block in seen_blocks
        if projection in ("gate_proj", "up_proj"):
            seen_blocks.add(block)
        shapes.append((modules[name].in_features, modules[name].out_features, shared))
    return shapes


def add_gram(total: torch.Tensor, x: torch.Tensor) -> None:
    """total += xᵀx: the symmetric rank-k update (BLAS syrk, upper triangle only) on the CPU, a product on a GPU."""
    if x.device.type == "cpu":
        syrk = blas.ssyrk if x.dtype == torch.float32 else blas.dsyrk
        syrk(1.0, x.numpy().T, beta=1.0, c=total.numpy().T, trans=0, lower=1, overwrite_c=1)
    else:
        total.addmm_(x.T, x)


def timed_products(shapes: list[tuple[int, int, bool]], n_batches: int, batch: int, length: int, queries: int,
                   device: torch.device, dtype: torch.dtype) -> dict[str, tuple[float, float]]:
    """Wall and CPU seconds of the EK-FAC products beyond the passes (module docstring), on random tensors of the
    workload's shapes: each kind is timed on one batch and counted ``n_batches`` times (precondition: once)."""
    generator = torch.Generator().manual_seed(0)

    def rand(*size: int) -> torch.Tensor:
        return torch.randn(*size, generator=generator).to(device, dtype)

    accumulate = torch.float32 if dtype != torch.float64 else torch.float64
    a = {n_in: rand(batch, length, n_in) for n_in, _, _ in shapes}
    ds = {n_out: rand(batch, length, n_out) for _, n_out, _ in shapes}
    bases = {d: rand(d, d) for d in {*a, *ds}}  # a product's time does not depend on its values
    sums = {(n_in, n_out): torch.zeros(n_out, n_in, dtype=accumulate, device=device) for n_in, n_out, _ in shapes}
    grams = {d: torch.zeros(d, d, dtype=accumulate, device=device) for d in {*a, *ds}}
    V = {(n_in, n_out): rand(queries, n_out, n_in) for n_in, n_out, _ in shapes}

    def covariance() -> None:
        for n_in, n_out, shared in shapes:
            if not shared:
                add_gram(grams[n_in], a[n_in].reshape(-1, n_in).to(accumulate))
            add_gram(grams[n_out], ds[n_out].reshape(-1, n_out).to(accumulate))

    def correction() -> None:
        rotated_a = None
        for n_in, n_out, shared in shapes:
            rotated_a = rotated_a if shared else a[n_in] @ bases[n_in]
            DW = torch.bmm((ds[n_out] @ bases[n_out]).transpose(1, 2), rotated_a)
            sums[n_in, n_out] += DW.square().sum(0, dtype=accumulate)

    def precondition() -> None:
        for n_in, n_out, _ in shapes:
            bases[n_out] @ V[n_in, n_out] @ bases[n_in].T

    def contraction() -> None:
        for n_in, n_out, _ in shapes:
            DW = torch.bmm(ds[n_out].transpose(1, 2), a[n_in])
            V[n_in, n_out].reshape(queries, -1) @ DW.reshape(batch, -1).T

    timings = {}
    for name, work, repeats in (("covariance", covariance, n_batches), ("correction", correction, n_batches),
                                ("precondition", precondition, 1), ("contraction", contraction, n_batches)):
        work()  # warm-up
        synchronize(device)
        start, cpu_start = time.perf_counter(), time.process_time()
        work()
        synchronize(device)
        timings[name] = ((time.perf_counter() - start) * repeats, (time.process_time() - cpu_start) * repeats)
    return timings


def fit_and_score(passes: list[float], eigh: float) -> tuple[float, float]:
    """fit = the first two passes + eigh, score = the third (fewer passes: the last one stands in)."""
    fit_passes = passes[:2] if len(passes) >= 2 else passes * 2
    return sum(fit_passes) + eigh, passes[2] if len(passes) >= 3 else passes[-1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--corpus", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True, help="JSON file for the timings")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    parser.add_argument("--dtype", choices=list(DTYPES), default="float32")
    parser.add_argument("--passes", type=int, default=3, help="timed passes (fit = the first two, score = the third)")
    parser.add_argument("--eigh-once-per-size", action="store_true", help="time each distinct factor size once")
    parser.add_argument("--no-products", dest="products", action="store_false",
                        help="leave out the EK-FAC products (covariances, rotations, preconditioning, contraction)")
    parser.add_argument("--queries", type=int, default=4, help="queries the products' scoring part assumes")
    args = parser.parse_args()
    if args.passes < 1:
        parser.error("--passes must be at least 1")
    device = torch.device(args.device)
    threadpool_limits(torch.get_num_threads(), user_api="blas")  # scipy's BLAS with torch's thread count

    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=DTYPES[args.dtype]).to(device).eval()
    model.requires_grad_(False)
    names = mlp_linear_names(model)
    modules = dict(model.named_modules())
    tracked = [modules[name] for name in names]
    ids = torch.tensor(corpus_token_ids(args.corpus), device=device)
    batches = list(ids.split(args.batch_size))

    timed_pass(model, tracked, batches[:1])  # warm-up: kernel selection and caches stay out of the timings
    pass_s, pass_cpu_s = zip(*(timed_pass(model, tracked, batches) for _ in range(args.passes)))
    sizes = factor_sizes(model, names)
    eigh_s, eigh_cpu_s = timed_eigendecompositions(sizes, device, args.eigh_once_per_size)
    fit_s, score_s = fit_and_score(list(pass_s), eigh_s)
    fit_cpu_s, score_cpu_s = fit_and_score(list(pass_cpu_s), eigh_cpu_s)
    tokens = ids.numel()
    result = {
        "pass_s": list(pass_s),
        "eigh_s": eigh_s,
        "n_eigh": len(sizes),
        "eigh_once_per_size": args.eigh_once_per_size,
        "fit_s": fit_s,
        "score_s": score_s,
        "total_s": fit_s + score_s,
        "pass_cpu_s": list(pass_cpu_s),
        "fit_cpu_s": fit_cpu_s,
        "score_cpu_s": score_cpu_s,
        "total_cpu_s": fit_cpu_s + score_cpu_s,
        "pass_tokens_per_s": tokens / min(pass_s),
        "n_layers": len(names),
        "n_sequences": int(ids.shape[0]),
        "sequence_length": int(ids.shape[1]),
        "batch_size": args.batch_size,
        "device": str(device),
        "dtype": args.dtype,
        "torch_threads": torch.get_num_threads(),
    }
    if args.products:
        products = timed_products(layer_shapes(model, names), len(batches), args.batch_size, int(ids.shape[1]),
                                  args.queries, device, DTYPES[args.dtype])
        fit_products = [products[k] for k in ("covariance", "correction")]
        score_products = [products[k] for k in ("precondition", "contraction")]
        result.update({
            "products_s": {k: wall for k, (wall, _) in products.items()},
            "products_cpu_s": {k: cpu for k, (_, cpu) in products.items()},
            "ekfac_fit_s": fit_s + sum(wall for wall, _ in fit_products),
            "ekfac_score_s": score_s + sum(wall for wall, _ in score_products),
            "ekfac_fit_cpu_s": fit_cpu_s + sum(cpu for _, cpu in fit_products),
            "ekfac_score_cpu_s": score_cpu_s + sum(cpu for _, cpu in score_products),
            "queries": args.queries,
        })
        result["ekfac_total_s"] = result["ekfac_fit_s"] + result["ekfac_score_s"]
        result["ekfac_total_cpu_s"] = result["ekfac_fit_cpu_s"] + result["ekfac_score_cpu_s"]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
