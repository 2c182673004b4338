"""The physical floor of EK-FAC on the benchmark workload: the work no implementation can skip.

EK-FAC over N training sequences needs three passes of forward + backward over the corpus (covariances, the
eigenvalue correction, the training gradients for scoring) and the eigendecompositions of the Kronecker factors.
This script times exactly that, with nothing else:
- pass: one forward and one backward per batch, the backward computing gradients with respect to the tracked
  MLP layers' outputs only (parameters frozen, the embedding output requires grad so autograd walks the whole
  network, no weight gradient is formed);
- eigh: torch.linalg.eigh in float64 of a random symmetric matrix of each factor's shape (A: in x in per distinct
  layer input, so gate_proj and up_proj share one; S: out x out per layer).
Writes a JSON with the timings: fit_s = 2 passes + eigh, score_s = 1 pass, total_s = 3 passes + eigh, the same
in CPU seconds of the process (fit_cpu_s, score_cpu_s, total_cpu_s), and the tokens per second of one pass.

  python benchmarks/floor.py --model DIR --corpus corpus.jsonl --out floor.json [--batch-size 8]
      [--device cuda --dtype bfloat16] [--passes 3] [--eigh-once-per-size]

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

    With `once_per_size` each distinct size is timed once and counted as many times as it occurs.
    """
    generator = torch.Generator().manual_seed(seed)
    counts = {size: sizes.count(size) for size in sizes} if once_per_size else None
    if device.type == "cuda":  # load cuSOLVER outside the timings
        torch.linalg.eigh(torch.eye(8, dtype=torch.float64, device=device))
    total = total_cpu = 0.0
    for size in counts or sizes:
        half = torch.randn(size, size, dtype=torch.float64, generator=generator).to(device)
        matrix = half @ half.T / size
        synchronize(device)
        start, cpu_start = time.perf_counter(), time.process_time()
        torch.linalg.eigh(matrix)
        synchronize(device)
        total += (time.perf_counter() - start) * (counts[size] if counts else 1)
        total_cpu += (time.process_time() - cpu_start) * (counts[size] if counts else 1)
    return total, total_cpu


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
    args = parser.parse_args()
    if args.passes < 1:
        parser.error("--passes must be at least 1")
    device = torch.device(args.device)

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
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
