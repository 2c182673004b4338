"""What experts cost: a tiny mixture-of-experts model against the dense model of the same active size.

    python benchmarks/experts_cost.py [--out benchmarks/results]

The MoE is a Mixtral block with E experts of width I, top-k routing; the dense model is a Llama with the same
hidden size, depth and attention and an MLP of width k·I, so a token goes through the same number of MLP
weights in both. Both are random-initialised (influence's cost does not depend on training), float32, on the
CPU with 2 threads; each runs `fit` (EK-FAC, default `mlp` preset) and `score` (4 queries) over the same
generated corpus, in this process. Records each pass's seconds, the factor memory and the parameter counts.
Writes experts-cost.json and experts-cost.md. A benchmark, not a test.
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import time
from pathlib import Path

import torch
from transformers import LlamaConfig, LlamaForCausalLM, MixtralConfig, MixtralForCausalLM

from benchmarks.architectures import char_tokenizer
from wherefrom.api import fit, score
from wherefrom.curvature.blocks import factor_sum_bytes
from wherefrom.models.selection import select_layers
from wherefrom.options import FitOptions, ScoreOptions

ROOT = Path(__file__).resolve().parent.parent
HIDDEN, LAYERS, EXPERT_WIDTH, EXPERTS, TOP_K = 128, 4, 128, 8, 2
WORDS = "the a of to in is was for on with as by at from that this it his her they we you".split()


def models() -> dict[str, torch.nn.Module]:
    """The MoE and its dense counterpart of equal active MLP width."""
    shared = dict(vocab_size=40, hidden_size=HIDDEN, num_hidden_layers=LAYERS, num_attention_heads=4,
                  num_key_value_heads=4, max_position_embeddings=128)
    torch.manual_seed(0)
    moe = MixtralForCausalLM(MixtralConfig(**shared, intermediate_size=EXPERT_WIDTH, num_local_experts=EXPERTS,
                                           num_experts_per_tok=TOP_K)).eval()
    torch.manual_seed(0)
    dense = LlamaForCausalLM(LlamaConfig(**shared, intermediate_size=TOP_K * EXPERT_WIDTH)).eval()
    return {f"MoE ({EXPERTS} experts, top-{TOP_K})": moe, f"dense (MLP width {TOP_K * EXPERT_WIDTH})": dense}


def corpus(path: Path, n: int, seed: int = 0) -> Path:
    rng = random.Random(seed)
    path.write_text("".join(json.dumps({"id": f"d{i}", "text": " ".join(rng.choices(WORDS, k=14))}) + "\n"
                            for i in range(n)))
    return path


def measure(name: str, model: torch.nn.Module, root: Path, n: int) -> dict:
    folder = root / name.split()[0].lower()
    model.save_pretrained(folder / "model")
    char_tokenizer().save_pretrained(folder / "model")
    corpus_path = corpus(folder / "corpus.jsonl", n)
    queries = folder / "queries.jsonl"
    queries.write_text("".join(json.dumps({"id": f"q{i}", "prompt": "the cat", "completion": " was on the mat."})
                               + "\n" for i in range(4)))
    layers = select_layers(model, "mlp")
    start = time.perf_counter()
    fit(folder / "model", corpus_path, folder / "run", FitOptions(batch_size=16, max_length=64), quiet=True)
    fitted = time.perf_counter()
    score(folder / "run", queries, out=folder / "scores", options=ScoreOptions(batch_size=16, max_length=64),
          quiet=True)
    scored = time.perf_counter()
    mlp = sum(p.numel() for n_, p in model.named_parameters() if ".mlp." in n_ or ".block_sparse_moe." in n_)
    return {"model": name, "parameters": model.num_parameters(), "mlp_parameters": mlp, "tracked_layers": len(layers),
            "factor_bytes": factor_sum_bytes(layers, 1, torch.float32), "fit_s": fitted - start,
            "score_s": scored - fitted, "sequences": n}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sequences", type=int, default=256)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = parser.parse_args()
    torch.set_num_threads(2)
    with tempfile.TemporaryDirectory() as tmp:
        rows = [measure(name, model, Path(tmp), args.sequences) for name, model in models().items()]
    moe, dense = rows
    ratio = {key: moe[key] / dense[key] for key in ("fit_s", "score_s", "factor_bytes", "mlp_parameters")}
    (args.out / "experts-cost.json").write_text(json.dumps({"rows": rows, "moe_over_dense": ratio}, indent=1) + "\n")
    lines = ["| model | parameters | MLP parameters | tracked layers | factor sums | fit s | score s |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    lines += [f"| {r['model']} | {r['parameters']:,} | {r['mlp_parameters']:,} | {r['tracked_layers']} | "
              f"{r['factor_bytes'] / 2 ** 20:.1f} MiB | {r['fit_s']:.1f} | {r['score_s']:.1f} |" for r in rows]
    lines += ["", f"MoE / dense: fit {ratio['fit_s']:.2f}×, score {ratio['score_s']:.2f}×, factor memory "
              f"{ratio['factor_bytes']:.2f}×, MLP parameters {ratio['mlp_parameters']:.2f}× "
              f"({args.sequences} sequences of 14 words, char-level tokens, 2 threads; `python "
              "benchmarks/experts_cost.py`)."]
    (args.out / "experts-cost.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
