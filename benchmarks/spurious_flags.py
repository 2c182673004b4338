"""How many of each demo query's top 10 the "spurious?" flag marks: the paper's rule alone (‖a‖₂/‖a‖₁ > 2/3)
against the calibrated flag (that rule and p ≤ 0.01 against same-length token draws of the scored corpus), and how
many of the marked ones are documents that state the query's fact (its carriers).

    PYTHONPATH=src python benchmarks/spurious_flags.py DEMO_OUT [--cache DEMO_CACHE_FOLDER]

DEMO_OUT is a folder written by `wherefrom demo` (its scores-ekfac holds per-token scores); the ground truth is
read from the demo model's cache folder (default: the one its summary.json names).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from wherefrom.analysis import SPURIOUS_THRESHOLD, spurious_sequences, token_norm_ratios
from wherefrom.scoring.results import ScoreResult

TOP = 10


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("demo_out", type=Path)
    parser.add_argument("--cache", type=Path, default=None)
    args = parser.parse_args()
    cache = args.cache or Path(json.loads((args.demo_out / "summary.json").read_text())["model_dir"])
    result = ScoreResult.load(args.demo_out / "scores-ekfac")
    facts = {row["id"]: row["fact"] for row in map(json.loads, (cache / "queries.jsonl").read_text().splitlines())}
    carriers = {fact["id"]: set(fact["carriers"]) for fact in json.loads((cache / "ground_truth.json").read_text())["facts"]}
    ratios = token_norm_ratios(result.per_token, result.token_offsets)
    calibrated = spurious_sequences(result, top_k=TOP)
    totals = {"paper": 0, "calibrated": 0, "paper carriers": 0, "calibrated carriers": 0, "carriers in top": 0}
    for query in result.queries:
        top = result.top(query.index, TOP)
        stating = carriers.get(facts.get(query.query_id, ""), set())
        is_carrier = {row: result.sequences[row].record_id in stating for row in top}
        paper = [row for row in top if ratios[query.index, row] > SPURIOUS_THRESHOLD]
        flagged = [s.row for s in calibrated[query.index]]
        totals["paper"] += len(paper)
        totals["calibrated"] += len(flagged)
        totals["paper carriers"] += sum(is_carrier[row] for row in paper)
        totals["calibrated carriers"] += sum(is_carrier[row] for row in flagged)
        totals["carriers in top"] += sum(is_carrier.values())
        print(f"{query.query_id:>12}: paper's rule {len(paper):2d}/{TOP}, calibrated {len(flagged):2d}/{TOP}, "
              f"carriers in top {sum(is_carrier.values())}")
    n = len(result.queries)
    print(f"{n} queries, top {TOP}: paper's rule flags {totals['paper']} ({totals['paper'] / (n * TOP):.0%}), "
          f"{totals['paper carriers']} of them carriers; calibrated flags {totals['calibrated']} "
          f"({totals['calibrated'] / (n * TOP):.0%}), {totals['calibrated carriers']} carriers "
          f"(of {totals['carriers in top']} carriers in the top {TOP}s)")


if __name__ == "__main__":
    main()
