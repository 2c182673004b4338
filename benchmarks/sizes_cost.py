"""Where the time of `wherefrom demo --sizes` goes, and what the whole run costs, from a few measured steps.

    python benchmarks/sizes_cost.py [--reduced] [--steps 16] [--fit] [--threads 1 2] [--only l] [--out DIR]

For each size of the demo (full, or `--reduced`; ``--only`` some), trains ``--steps`` steps of its recipe with
each of ``--threads`` torch thread counts, alternated (1, 2, 1, 2: the load of a shared machine drifts), and
reports the milliseconds per step of each. With ``--fit``, also fits EK-FAC and scores the shipped queries per
layer (as the demo does) with each thread count, for one model of each size trained for those few steps only
(the cost of a fit does not depend on how well the model is trained). The estimate of the whole run, per thread
count: 2 seeds x (steps of the recipe x time per step + fit and score). Writes sizes-cost[-reduced].json and .md.
A benchmark, not a test.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from dataclasses import asdict, replace
from pathlib import Path

from wherefrom.api import fit, score
from wherefrom.demo.size_models import FULL_SIZES, REDUCED_SIZES, SEEDS, reduced_sizes_config, write_world
from wherefrom.options import FitOptions, ScoreOptions
from wherefrom.synthetic.config import MAX_LENGTH, DemoConfig
from wherefrom.synthetic.model import build_model
from wherefrom.synthetic.tokenizer import train_tokenizer
from wherefrom.synthetic.training import cpu_threads, train_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reduced", action="store_true")
    parser.add_argument("--steps", type=int, default=16)
    parser.add_argument("--fit", action="store_true")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="thread counts to time")
    parser.add_argument("--only", nargs="+", help="size names to time (default: all)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = parser.parse_args()
    base = reduced_sizes_config() if args.reduced else DemoConfig()
    sizes = [s for s in (REDUCED_SIZES if args.reduced else FULL_SIZES) if not args.only or s.name in args.only]
    counts = tuple(args.threads)
    work = Path(tempfile.mkdtemp(prefix="sizes-cost-"))
    corpus = write_world(base, work)
    texts = [d.text for d in corpus.documents]
    tokenizer = train_tokenizer(texts, base.model.vocab_size, base.model.context_length)
    sequences = tokenizer(texts)["input_ids"]
    steps_per_epoch = -(-len(sequences) // base.training.batch_size)
    recipe_steps = base.training.epochs * steps_per_epoch
    load = os.getloadavg()
    rows = []
    for size in sizes:
        config = replace(base.model, hidden_size=size.hidden_size, intermediate_size=size.intermediate_size,
                         num_layers=size.num_layers, num_heads=size.num_heads)
        timed: dict[int, list[float]] = {t: [] for t in counts}
        for threads in counts + counts:
            with cpu_threads(threads):
                model = build_model(config, tokenizer, 0)
                subset = sequences[:args.steps * base.training.batch_size]
                report = train_model(model, subset, replace(base.training, epochs=1), tokenizer.pad_token_id, 0,
                                     quiet=True)
            timed[threads].append(report.seconds / report.steps)
        row = {"size": asdict(size), "parameters": sum(p.numel() for p in model.parameters()),
               "ms_per_step": {t: 1000 * statistics.median(v) for t, v in timed.items()}}
        if args.fit:
            folder = work / size.name
            model.save_pretrained(folder)
            tokenizer.save_pretrained(folder)
            row["fit_s"], row["score_s"] = {}, {}
            for threads in counts:
                with cpu_threads(threads):
                    clock = time.perf_counter()
                    fit(folder, work / "corpus.jsonl", work / f"run-{size.name}-{threads}",
                        FitOptions(strategy="ekfac", max_length=MAX_LENGTH, batch_size=32), quiet=True)
                    row["fit_s"][threads] = time.perf_counter() - clock
                    clock = time.perf_counter()
                    score(work / f"run-{size.name}-{threads}", work / "queries.jsonl", quiet=True,
                          out=work / f"scores-{size.name}-{threads}",
                          options=ScoreOptions(max_length=MAX_LENGTH, batch_size=32, per_layer=True))
                    row["score_s"][threads] = time.perf_counter() - clock
        rows.append(row)
        print(json.dumps(row), flush=True)
    best = {t: sum(len(SEEDS) * recipe_steps * r["ms_per_step"][t] / 1000 for r in rows) for t in counts}
    fitting = ({t: sum(len(SEEDS) * (r["fit_s"][t] + r["score_s"][t]) for r in rows) for t in counts} if args.fit
               else None)
    result = {"reduced": args.reduced, "documents": len(texts), "recipe_steps": recipe_steps, "timed_steps": args.steps,
              "load_before": load, "load_after": os.getloadavg(), "sizes": rows,
              "training_estimate_s": best, "fit_and_score_estimate_s": fitting}
    name = "sizes-cost" + ("-reduced" if args.reduced else "")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    flags = " ".join(["--reduced"] * args.reduced + [f"--steps {args.steps}"] + ["--fit"] * args.fit
                     + [f"--threads {' '.join(map(str, counts))}"] + ([f"--only {' '.join(args.only)}"] if args.only else []))
    lines = [f"# `demo --sizes{' --reduced' if args.reduced else ''}`: where the time goes", "",
             f"`python benchmarks/sizes_cost.py {flags}`; load average {load[0]:.1f} before, {os.getloadavg()[0]:.1f} "
             f"after. {len(texts)} documents, {recipe_steps} training steps per model, {len(SEEDS)} seeds per size.", "",
             "| size | parameters |" + "".join(f" ms/step, {t} thread(s) |" for t in counts)
             + "".join(f" fit + score s, {t} thread(s) |" for t in counts if args.fit),
             "| --- | --- |" + " --- |" * (len(counts) * (2 if args.fit else 1))]
    for r in rows:
        lines.append(f"| {r['size']['name']} | {r['parameters']:,} |" + "".join(f" {r['ms_per_step'][t]:.0f} |" for t in counts)
                     + "".join(f" {r['fit_s'][t]:.1f} + {r['score_s'][t]:.1f} |" for t in counts if args.fit))
    lines += ["", f"Training all {len(SEEDS) * len(rows)} models: "
              + ", ".join(f"{best[t]:.0f} s with {t} thread(s)" for t in counts)
              + ("; fitting and scoring them: " + ", ".join(f"{fitting[t]:.0f} s with {t} thread(s)" for t in counts)
                 if fitting is not None else "") + "."]
    (args.out / f"{name}.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
