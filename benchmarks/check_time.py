"""How long `wherefrom check` takes next to `wherefrom fit` on the workload of issue 11.

A SmolLM2-135M-shaped model cut to 6 decoder blocks (18 MLP linears: hidden 576, MLP 1536, vocab 49152), built
from its config with random weights (the cost does not depend on the values), and a corpus of 32 sequences of
48 tokens. Fits a run, then runs `check` through the CLI with the given extra arguments; prints both wall and CPU
times and their ratios, and the check's last lines. Nothing here asserts on time. The fit is timed once per work folder
(its seconds are kept in fit-seconds.txt); later calls time only the check, e.g. with other options or
``--dry-run`` (which prints the expected time without checking).

    PYTHONPATH=src python benchmarks/check_time.py [--work DIR] [-- CHECK ARGS...]
"""

from __future__ import annotations

import argparse
import random
import resource
import string
import subprocess
import sys
import time
from pathlib import Path

import torch
from transformers import LlamaConfig, LlamaForCausalLM

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT / "tests"))
from tiny import save_model_dir, write_jsonl  # noqa: E402  (the tests' character tokenizer)


def smollm2_shaped(layers: int = 6) -> LlamaForCausalLM:
    """SmolLM2-135M's shape with ``layers`` decoder blocks."""
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=layers,
                         num_attention_heads=9, num_key_value_heads=3, max_position_embeddings=2048,
                         tie_word_embeddings=True, rope_theta=100000.0)
    return LlamaForCausalLM(config).eval()


def prepare(work: Path) -> tuple[Path, Path]:
    """The model folder and a corpus of 32 sequences of 48 tokens (a BOS and 47 characters)."""
    model, corpus = work / "model", work / "corpus.jsonl"
    if not model.exists():
        save_model_dir(smollm2_shaped(), model)
    rng = random.Random(0)
    write_jsonl(corpus, [{"id": f"d{i}", "text": "".join(rng.choice(string.ascii_lowercase + " ") for _ in range(47))}
                         for i in range(32)])
    return model, corpus


def timed(command: list[str]) -> tuple[float, float, str]:
    """Wall seconds, CPU seconds (user + system of the command) and stdout. On a shared, loaded machine the CPU
    seconds are the comparable number (run with OMP_NUM_THREADS=1 so no thread spins waiting for another)."""
    before, start = resource.getrusage(resource.RUSAGE_CHILDREN), time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    seconds, after = time.perf_counter() - start, resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stdout}\n{done.stderr}")
    return seconds, after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime, done.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=REPO_ROOT / "bench-work" / "check-time")
    parser.add_argument("check_args", nargs="*", help="extra arguments of `wherefrom check` (after --)")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    model, corpus = prepare(args.work)
    cli = [sys.executable, "-m", "wherefrom"]
    run, fit_file = args.work / "run", args.work / "fit-seconds.txt"
    if not fit_file.exists():
        wall, cpu, _ = timed([*cli, "fit", "--model", str(model), "--corpus", str(corpus), "--out", str(run),
                              "--max-length", "48", "--restart", "-q"])
        fit_file.write_text(f"{wall} {cpu}\n")
    fit_wall, fit_cpu = map(float, fit_file.read_text().split())
    wall, cpu, output = timed([*cli, "check", "--run", str(run), "--corpus", str(corpus), "-q", *args.check_args])
    print("\n".join(output.strip().splitlines()[-12:]))
    print(f"fit: {fit_wall:.1f} s wall, {fit_cpu:.1f} s CPU; check {' '.join(args.check_args)}: {wall:.1f} s wall, "
          f"{cpu:.1f} s CPU; check / fit = {wall / fit_wall:.2f} (wall), {cpu / fit_cpu:.2f} (CPU)")


if __name__ == "__main__":
    main()
