"""How wherefrom's time grows with the corpus (it should be linear) and with the number of queries (nearly flat:
the corpus pass dominates, and query batching keeps the contraction small), on the demo model.

    python benchmarks/scaling.py --model ~/.cache/wherefrom/demo-<hash> --out benchmarks/results

Every point runs `fit` (EK-FAC) and `score` in this process with quiet progress; the queries are the demo's
(repeated to reach larger counts). Writes scaling.json, scaling.md and scaling.png. A benchmark, not a test.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from wherefrom.api import fit, score  # noqa: E402
from wherefrom.data.records import read_records  # noqa: E402
from wherefrom.fileio import read_jsonl  # noqa: E402
from wherefrom.options import FitOptions, ScoreOptions  # noqa: E402

MAX_LENGTH, BATCH = 64, 32


def write_subset(records: list, n: int, path: Path) -> Path:
    """The first ``n`` corpus records as jsonl."""
    path.write_text("".join(json.dumps({"id": r.id, "text": r.text}) + "\n" for r in records[:n]))
    return path


def write_queries(rows: list[dict], n: int, path: Path) -> Path:
    """``n`` queries: the demo's, repeated with new ids when more are asked for."""
    path.write_text("".join(json.dumps({"id": f"{rows[i % len(rows)]['id']}~{i}", "prompt": rows[i % len(rows)]["prompt"],
                                        "completion": rows[i % len(rows)]["completion"]}) + "\n" for i in range(n)))
    return path


def timed(action) -> float:  # noqa: ANN001 - a callable
    clock = time.perf_counter()
    action()
    return time.perf_counter() - clock


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, required=True, help="The demo model folder (in ~/.cache/wherefrom).")
    parser.add_argument("--sizes", default="250,500,1000,1946")
    parser.add_argument("--queries", default="1,4,16,64")
    parser.add_argument("--query-rank", type=int, default=32)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = parser.parse_args()
    records = read_records(args.model / "corpus.jsonl")
    demo_queries = read_jsonl(args.model / "queries.jsonl")
    data = {"max_length": MAX_LENGTH, "batch_size": BATCH}
    corpus_rows, query_rows = [], []
    with tempfile.TemporaryDirectory() as scratch:
        work = Path(scratch)
        one_query = write_queries(demo_queries, 1, work / "q1.jsonl")
        for n in [int(s) for s in args.sizes.split(",")]:
            corpus = write_subset(records, n, work / f"corpus-{n}.jsonl")
            fit_s = timed(lambda: fit(args.model, corpus, work / f"run-{n}", FitOptions(**data), quiet=True))  # noqa: B023
            score_s = timed(lambda: score(work / f"run-{n}", one_query, options=ScoreOptions(**data), quiet=True))  # noqa: B023
            corpus_rows.append({"sequences": n, "fit_s": fit_s, "score_s": score_s,
                                "fit_seq_per_s": n / fit_s, "score_seq_per_s": n / score_s})
            print(corpus_rows[-1], flush=True)
        run = work / f"run-{corpus_rows[-1]['sequences']}"
        for q in [int(s) for s in args.queries.split(",")]:
            queries = write_queries(demo_queries, q, work / f"q-{q}.jsonl")
            full_s = timed(lambda: score(run, queries, options=ScoreOptions(**data), quiet=True))  # noqa: B023
            batched_s = timed(lambda: score(run, queries, quiet=True,  # noqa: B023
                                            options=ScoreOptions(**data, query_rank=args.query_rank)))
            query_rows.append({"queries": q, "score_s": full_s, "score_rank_s": batched_s})
            print(query_rows[-1], flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "scaling.json").write_text(json.dumps({"corpus": corpus_rows, "queries": query_rows,
                                                       "query_rank": args.query_rank}, indent=2) + "\n")
    write_markdown(corpus_rows, query_rows, args.query_rank, args.out / "scaling.md")
    plot(corpus_rows, query_rows, args.query_rank, args.out / "scaling.png")


def write_markdown(corpus_rows: list[dict], query_rows: list[dict], rank: int, path: Path) -> None:
    lines = ["| sequences | fit s | fit seq/s | score s (1 query) | score seq/s |", "|---|---|---|---|---|"]
    lines += [f"| {r['sequences']} | {r['fit_s']:.1f} | {r['fit_seq_per_s']:.1f} | {r['score_s']:.1f} | "
              f"{r['score_seq_per_s']:.1f} |" for r in corpus_rows]
    lines += ["", f"| queries | score s | score s, --query-rank {rank} |", "|---|---|---|"]
    lines += [f"| {r['queries']} | {r['score_s']:.1f} | {r['score_rank_s']:.1f} |" for r in query_rows]
    path.write_text("\n".join(lines) + "\n")


def plot(corpus_rows: list[dict], query_rows: list[dict], rank: int, path: Path) -> None:
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.4))
    n = [r["sequences"] for r in corpus_rows]
    left.plot(n, [r["fit_s"] for r in corpus_rows], "o-", label="fit (EK-FAC)")
    left.plot(n, [r["score_s"] for r in corpus_rows], "s-", label="score (1 query)")
    left.set_xlabel("training sequences")
    left.set_ylabel("seconds")
    left.legend()
    q = [r["queries"] for r in query_rows]
    right.plot(q, [r["score_s"] for r in query_rows], "o-", label="full-rank queries")
    right.plot(q, [r["score_rank_s"] for r in query_rows], "s-", label=f"--query-rank {rank}")
    right.set_xscale("log", base=2)
    right.set_xlabel("queries")
    right.set_ylabel("score seconds")
    right.legend()
    for ax in (left, right):
        ax.grid(alpha=0.3)
        ax.set_ylim(bottom=0)
    fig.tight_layout()
    fig.savefig(path, dpi=150)


if __name__ == "__main__":
    main()
