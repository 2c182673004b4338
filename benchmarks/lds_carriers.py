"""How much of the LDS of benchmarks/lds_finetune.py's LoRA fine-tune a score gets from the fact's carriers alone.

Reads what `python benchmarks/lds_finetune.py` left (no model is loaded, nothing is trained): every retrained
subset's rows (``retrained/*/subset-*/subset.json``), each method's scores (``work/scores-*-damping-default``) and
the measured log p of every query under every retrained model (``benchmarks/results/lds-smollm2-lora.json``).
For each query the carriers are the 3 documents of benchmarks/fact_world.py that state its fact. It recomputes:

- each method's LDS (mean over queries of the Spearman correlation, over the subsets, between the sum of the
  subset's scores and the measured log p) as a check that the numbers match `validate lds`;
- the LDS of a score with no gradient in it: 1 for the query's carriers, 0 for every other document;
- each method's LDS with its carriers' scores set to 0 (what the rest of the corpus contributes), and with only
  its carriers' scores kept;
- how often a method puts the 3 carriers in its top 3;
- the median over queries of the Spearman correlation of a method's scores with identity's (over documents);
- the ratio of each method's mean LDS to identity's, with a 95% paired bootstrap interval over queries.

Writes benchmarks/results/lds-smollm2-lora-carriers.json and prints a table.

Run: python benchmarks/lds_carriers.py [--work bench-work/lds-finetune]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file
from scipy.stats import spearmanr

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.fact_world import build_world  # noqa: E402
from benchmarks.workload import WORK  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
METHODS = {"identity": "identity", "diagonal": "diagonal", "kfac": "kfac", "ekfac": "ekfac", "index": "ekfac-index"}  # → folder


def per_query_lds(scores: np.ndarray, subsets: list[list[int]], measured: np.ndarray) -> np.ndarray:
    """Spearman over subsets of (sum of the subset's scores, measured log p), per query."""
    predicted = np.stack([scores[:, rows].sum(1) for rows in subsets], 1)  # [Q, M]
    return np.array([spearmanr(predicted[q], measured[q]).statistic for q in range(len(measured))])


def interval(values: np.ndarray, resamples: int = 10_000) -> list[float]:
    """95% percentile bootstrap interval of the mean over queries (seeded)."""
    rng = np.random.default_rng(0)
    means = values[rng.integers(0, len(values), (resamples, len(values)))].mean(1)
    return [round(float(x), 3) for x in np.percentile(means, [2.5, 97.5])]


def ratio(values: np.ndarray, base: np.ndarray, resamples: int = 10_000) -> dict:
    """mean(values) / mean(base) with its 95% paired percentile bootstrap interval over queries (seeded)."""
    rng = np.random.default_rng(0)
    picks = rng.integers(0, len(values), (resamples, len(values)))
    ratios = values[picks].mean(1) / base[picks].mean(1)
    return {"ratio": round(float(values.mean() / base.mean()), 3),
            "interval": [round(float(x), 3) for x in np.percentile(ratios, [2.5, 97.5])]}


def summary(values: np.ndarray) -> dict:
    return {"mean": round(float(values.mean()), 4), "interval": interval(values)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=WORK / "lds-finetune")
    parser.add_argument("--results", default="lds-smollm2-lora", help="the lds_finetune.py results' name")
    args = parser.parse_args()
    lds_dir = args.work / "lds"
    report = json.loads((RESULTS / f"{args.results}.json").read_text())
    measured = np.asarray(report["measured"], dtype=float)  # [Q, M]
    retrained = Path(report["protocol"]["retrained_models"])
    subsets = [json.loads((retrained / f"subset-{m}-f{report['protocol']['fraction']:g}-train-0" / "subset.json")
                          .read_text())["rows"] for m in range(report["protocol"]["models"])]
    work = lds_dir / "work"
    sequences = [json.loads(line) for line in (work / "scores-identity-damping-default" / "sequences.jsonl")
                 .read_text().splitlines()]
    queries = [json.loads(line) for line in (args.work / "world" / "lds-queries.jsonl").read_text().splitlines()]
    world = build_world(0)
    carriers = np.array([[1.0 if s["record_id"] in world.corpus.fact(q["fact"]).carriers else 0.0
                          for s in sequences] for q in queries])
    identity = load_file(work / "scores-identity-damping-default" / "scores.safetensors")["scores"].astype(float)
    out: dict = {"queries": len(queries), "subsets": len(subsets), "documents": len(sequences),
                 "carrier_indicator": summary(per_query_lds(carriers, subsets, measured)), "methods": {}}
    for method, folder in METHODS.items():
        path = work / f"scores-{folder}-damping-default" / "scores.safetensors"
        if not path.is_file():
            continue
        scores = load_file(path)["scores"].astype(float)
        top3 = np.argsort(-scores, 1)[:, :3]
        lds = per_query_lds(scores, subsets, measured)
        out["methods"][method] = {
            "lds": summary(lds),
            "ratio_to_identity": ratio(lds, per_query_lds(identity, subsets, measured)),
            "lds_carriers_zeroed": summary(per_query_lds(scores * (1 - carriers), subsets, measured)),
            "lds_carriers_only": summary(per_query_lds(scores * carriers, subsets, measured)),
            "carriers_in_top_3": round(float(np.take_along_axis(carriers, top3, 1).sum(1).mean() / 3), 3),
            "median_spearman_with_identity": round(float(np.median(
                [spearmanr(scores[q], identity[q]).statistic for q in range(len(queries))])), 3),
        }
    (RESULTS / f"{args.results}-carriers.json").write_text(json.dumps(out, indent=1) + "\n")
    c = out["carrier_indicator"]
    print(f"carriers = 1, others = 0 (no gradients): LDS {c['mean']:.3f} {c['interval']}")
    print("method | LDS | carriers' scores set to 0 | carriers' scores only | carriers in top 3 | "
          "median Spearman with identity | LDS / identity's")
    for method, m in out["methods"].items():
        print(f"{method} | {m['lds']['mean']:.3f} {m['lds']['interval']} | {m['lds_carriers_zeroed']['mean']:.3f} "
              f"{m['lds_carriers_zeroed']['interval']} | {m['lds_carriers_only']['mean']:.3f} "
              f"{m['lds_carriers_only']['interval']} | {m['carriers_in_top_3']:.2f} | "
              f"{m['median_spearman_with_identity']:.2f} | {m['ratio_to_identity']['ratio']:.2f} "
              f"{m['ratio_to_identity']['interval']}")


if __name__ == "__main__":
    main()
