"""Peak memory of the streaming engine against the number of tracked layers.

A Llama built from a config (16 blocks, hidden 256, intermediate 768, vocabulary 2048, random weights) streams
a batch of 8 × 128 tokens. The MLP projections of the first k blocks are tracked (3k layers), k = 1, 2, 4, 8, 16:
the model and its forward and backward passes are the same for every k, so what changes with k is what the
engine holds for the pass. Each configuration runs in a fresh process, one batch, and reports the peak memory
above what the process held just before the pass (model, accumulator sums and their scratch already allocated):

- CPU: the resident-set high-water mark (VmHWM, reset through /proc/self/clear_refs; glibc returns large blocks
  at once, see wherefrom/allocator.py);
- CUDA: torch.cuda.max_memory_allocated.

Consumers: ``floor`` (the same forward and activation-only backward with no hooks), ``covariance`` (A, S: ā is
taken in the forward pass) and ``correction`` (Λ with identity bases: ā held until the backward pass reaches its
layer). Writes benchmarks/results/stream_memory.json, .md and .png (the curve), with the commit measured.

  PYTHONPATH=src python benchmarks/stream_memory.py [--device cpu] [--blocks 1 2 4 8 16]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from datetime import datetime
from pathlib import Path

RESULTS = Path(__file__).parent / "results"
CONSUMERS = ("floor", "covariance", "correction")
BATCH, TOKENS, BLOCKS, HIDDEN = 8, 128, 16, 256


def measure(consumer: str, tracked_blocks: int, device: str) -> int:
    """Peak bytes above the pre-pass level for one configuration (run in this process)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from wherefrom.allocator import return_large_blocks_to_os
    from wherefrom.curvature.correction import CorrectionAccumulator
    from wherefrom.curvature.covariance import CovarianceAccumulator
    from wherefrom.data.batching import make_batches
    from wherefrom.engine.execution import Execution
    from wherefrom.engine.stream import Labels, stream
    from wherefrom.models.loading import prepare_for_influence
    from wherefrom.models.selection import select_layers

    return_large_blocks_to_os()
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=2048, hidden_size=HIDDEN, intermediate_size=3 * HIDDEN, num_hidden_layers=BLOCKS,
                         num_attention_heads=8, num_key_value_heads=8, max_position_embeddings=TOKENS)
    model = prepare_for_influence(LlamaForCausalLM(config).to(device))
    layers = select_layers(model, rf"layers\.({'|'.join(map(str, range(tracked_blocks)))})\.mlp\.")
    execution = Execution.of(model)
    tokens = torch.randint(0, 2048, (BATCH, TOKENS)).tolist()
    batches = list(make_batches(tokens, [1] * len(tokens), BATCH, device=execution.device))
    shapes = {layer.name: (layer.shape.out_features, layer.shape.in_dim) for layer in layers}
    if consumer == "covariance":
        accumulator = CovarianceAccumulator(layers, execution)
    else:
        eye = {n: torch.eye(n, device=execution.device) for layer in layers
               for n in (layer.shape.in_dim, layer.shape.out_features)}
        accumulator = CorrectionAccumulator({layer.name: (eye[layer.shape.in_dim], eye[layer.shape.out_features])
                                             for layer in layers}, shapes, execution)
    run = (lambda: _floor(model, batches)) if consumer == "floor" else \
        (lambda: [None for _ in stream(model, layers, batches, len(batches), Labels("data"), accumulator, "", True)])
    run()  # warm-up: the accumulator's scratch and the allocator's caches exist before measuring
    return _peak_above_baseline(run, execution.device)


def _floor(model: object, batches: list) -> None:
    import torch

    embed = model.get_input_embeddings()
    handle = embed.register_forward_hook(lambda _m, _i, out: out.requires_grad_(True))
    try:
        for batch in batches:
            captured = []
            hook = embed.register_forward_hook(lambda _m, _i, out: captured.append(out))
            logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
            hook.remove()
            loss = torch.nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1), batch.input_ids[:, 1:].flatten())
            torch.autograd.grad(loss, captured)
    finally:
        handle.remove()


def _peak_above_baseline(run: object, device: object) -> int:
    import gc

    import torch

    gc.collect()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        run()
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device) - before
    Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current resident size
    before = _status_kib("VmRSS")
    run()
    return (_status_kib("VmHWM") - before) * 1024


def _status_kib(field: str) -> int:
    line = next(line for line in Path("/proc/self/status").read_text().splitlines() if line.startswith(field))
    return int(line.split()[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--blocks", type=int, nargs="+", default=[1, 2, 4, 8, 16])
    parser.add_argument("--one", nargs=2, metavar=("CONSUMER", "BLOCKS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(measure(args.one[0], int(args.one[1]), args.device))
        return
    rows = []
    for blocks in args.blocks:
        row = {"tracked_blocks": blocks, "tracked_layers": 3 * blocks}
        for consumer in CONSUMERS:
            output = subprocess.run([sys.executable, __file__, "--device", args.device, "--one", consumer, str(blocks)],
                                    check=True, capture_output=True, text=True).stdout
            row[consumer] = int(output.split()[-1])
        rows.append(row)
        print(row, flush=True)
    RESULTS.mkdir(exist_ok=True)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                            cwd=Path(__file__).parent).stdout.strip() or "unknown"
    measured_at = datetime.now().isoformat(timespec="seconds")
    (RESULTS / "stream_memory.json").write_text(json.dumps({"device": args.device, "batch": [BATCH, TOKENS],
                                                             "commit": commit, "measured_at": measured_at,
                                                             "rows": rows}, indent=2) + "\n")
    lines = [f"Peak memory of one batch ({BATCH} × {TOKENS} tokens) above the pre-pass level, {args.device}, "
             f"commit {commit}, {measured_at} (`benchmarks/stream_memory.py`).", "",
             "| tracked layers (blocks) | plain forward + backward (MiB) | covariance pass (MiB) | "
             "correction pass (MiB) |", "|---|---|---|---|"]
    lines += [f"| {r['tracked_layers']} ({r['tracked_blocks']}) | {r['floor'] / 2**20:.1f} | "
              f"{r['covariance'] / 2**20:.1f} | {r['correction'] / 2**20:.1f} |" for r in rows]
    (RESULTS / "stream_memory.md").write_text("\n".join(lines) + "\n")
    plot(rows, args.device, RESULTS / "stream_memory.png")
    print("\n".join(lines))


def plot(rows: list[dict], device: str, path: Path) -> None:
    """Peak MiB of each consumer against the number of tracked layers."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.4))
    layers = [r["tracked_layers"] for r in rows]
    for consumer, label, marker in (("floor", "plain forward + backward", "o--"),
                                    ("covariance", "covariance pass", "s-"), ("correction", "correction pass", "^-")):
        ax.plot(layers, [r[consumer] / 2**20 for r in rows], marker, label=label)
    ax.set_xscale("log", base=2)
    ax.set_xticks(layers, [str(n) for n in layers])
    ax.set_xlabel("tracked layers")
    ax.set_ylabel(f"peak MiB above pre-pass ({device})")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    main()
