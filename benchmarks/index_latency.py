"""Seconds to answer a new query from a large gradient index, on this machine's CPU.

    python benchmarks/index_latency.py --run RUN --queries QUERIES.jsonl --budget 64KB --sequences 100000

Builds a real index of the run's corpus at ``--budget`` (its projections and rows), then a ``--sequences``-row
index beside it whose rows are that index's rows repeated (generated sequences: the timing depends on the shape,
not on the values). Times, best of ``--repeats`` and the first (cold) call: the query's gradient (one forward and
backward pass), the index's ranking of every row (rotation, preconditioning and the contraction), and the exact
re-scoring of the top ``--rescore`` (a pass over those sequences only), on the real corpus's first rows.
Writes index-latency.json to ``--out``. A benchmark, not a test: it asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import numpy as np

from wherefrom.curvature.store import load_run
from wherefrom.data.corpus import build_sequences
from wherefrom.data.queries import read_queries
from wherefrom.data.records import read_records
from wherefrom.index import GradientIndex, build_index
from wherefrom.index.store import GRADIENTS, MANIFEST, PROJECTIONS, SCALES
from wherefrom.models.loading import load_model
from wherefrom.models.selection import select_layers
from wherefrom.options import IndexOptions, ScoreOptions
from wherefrom.scoring.query_gradients import query_gradients
from wherefrom.scoring.scorer import score

ROWS_PER_WRITE = 4096


def repeated_index(source: GradientIndex, folder: Path, n: int) -> GradientIndex:
    """An index of ``n`` rows: ``source``'s projections and its rows repeated."""
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(source.folder / PROJECTIONS, folder / PROJECTIONS)
    rows = np.lib.format.open_memmap(folder / GRADIENTS, mode="w+", dtype=source.gradients.dtype,
                                     shape=(n, source.gradients.shape[1]))
    scales = np.lib.format.open_memmap(folder / SCALES, mode="w+", dtype=np.float32, shape=(n,))
    pattern = np.arange(n) % source.n_sequences
    for lo in range(0, n, ROWS_PER_WRITE):
        rows[lo:lo + ROWS_PER_WRITE] = source.gradients[pattern[lo:lo + ROWS_PER_WRITE]]
        scales[lo:lo + ROWS_PER_WRITE] = source.scales[pattern[lo:lo + ROWS_PER_WRITE]]
    rows.flush()
    scales.flush()
    (folder / MANIFEST).write_text(json.dumps({**source.manifest, "n_sequences": n}, indent=2) + "\n")
    return GradientIndex.open(folder)


def timed(repeats: int, action) -> tuple[float, float]:  # noqa: ANN001 - a callable
    """(first call's seconds, best of ``repeats`` calls)."""
    seconds = []
    for _ in range(repeats):
        clock = time.perf_counter()
        action()
        seconds.append(time.perf_counter() - clock)
    return seconds[0], min(seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path, required=True)
    parser.add_argument("--queries", type=Path, required=True)
    parser.add_argument("--budget", default=IndexOptions().budget)
    parser.add_argument("--sequences", type=int, default=100_000)
    parser.add_argument("--rescore", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--work", type=Path, default=Path("bench-work/index-latency"))
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = parser.parse_args()
    factors = load_run(args.run)
    fitted = factors.manifest["options"]
    data = {"max_length": fitted["max_length"], "pack": fitted["pack"], "batch_size": fitted["batch_size"]}
    small = build_index(args.run, args.work / f"small-{args.budget}", options=IndexOptions(**data, budget=args.budget),
                        quiet=True)
    large = repeated_index(small, args.work / f"large-{args.budget}-{args.sequences}", args.sequences)
    loaded = load_model(factors.manifest["model"]["source"])
    layers = select_layers(loaded.model, fitted["modules"])
    query = read_queries(args.queries, loaded.tokenizer, fitted["max_length"])[:1]
    gradients = query_gradients(loaded.model, layers, query, 1, quiet=True)
    gradient_s = timed(args.repeats, lambda: query_gradients(loaded.model, layers, query, 1, quiet=True))
    ranking_s = timed(args.repeats, lambda: large.scores(gradients))
    sequences = build_sequences(read_records(fitted["corpus"]), loaded.tokenizer, data["max_length"], data["pack"])
    top = sequences[:min(args.rescore, len(sequences))]
    options = ScoreOptions(**data)
    rescore_s = timed(1, lambda: score(loaded.model, loaded.tokenizer, layers, factors.curvature, query, top, options,
                                       quiet=True))
    result = {"budget": args.budget, "bytes_per_sequence": large.manifest["bytes_per_sequence"],
              "values": int(large.gradients.shape[1]), "sequences": large.n_sequences,
              "index_gigabytes": large.gradients.nbytes / 1e9,
              "query_gradient_s": {"first": gradient_s[0], "best": gradient_s[1]},
              "ranking_s": {"first": ranking_s[0], "best": ranking_s[1]},
              "answer_s": gradient_s[1] + ranking_s[1],
              f"rescore_top{len(top)}_s": rescore_s[0], "model": loaded.source, "layers": len(layers)}
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"index-latency-{args.budget}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
