"""How many of an index's top sequences must be re-scored exactly to return full EK-FAC's top 10, per compression.

    python benchmarks/index_rescoring.py --results DIR [--methods global,global-int8] [--budget 128000]

Reads the score matrices benchmarks/index_accuracy.py saved (DIR/index-scores.pt: full EK-FAC's scores and every
compression's, queries × sequences) and writes DIR/index-rescoring.json, .md and .png: for each compression and
budget, the share of full EK-FAC's top 10 inside the compression's top N (what `score --index --rescore N`
returns, since the exact top 10 of the candidates is the true top 10 restricted to them) for N from 10 to every
sequence, and the smallest N that reaches 9 of 10 on average over the queries; and per query, at ``--budget``,
where the true top 10 sit in each compression's ranking. A benchmark, not a test: it asserts nothing.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

GOAL = 0.9


def ranks_of_true_top10(approx: torch.Tensor, exact: torch.Tensor) -> torch.Tensor:
    """Per query, the rank (1-based) in ``approx`` of each of the 10 sequences ``exact`` ranks highest: [Q, 10]."""
    order = approx.argsort(dim=1, descending=True)
    position = torch.empty_like(order)
    position.scatter_(1, order, torch.arange(1, order.shape[1] + 1).expand_as(order))
    return position.gather(1, exact.topk(10, dim=1).indices)


def recall_curve(ranks: torch.Tensor, depths: list[int]) -> list[float]:
    """Mean over queries of the share of the true top 10 within the top N, for each N."""
    return [float((ranks <= n).float().mean()) for n in depths]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results", type=Path, default=Path("benchmarks/results"))
    parser.add_argument("--scores", type=Path, help="Default: RESULTS/index-scores.pt.")
    parser.add_argument("--methods", help="Comma-separated; default: every method saved.")
    parser.add_argument("--budget", type=int, default=128_000, help="Bytes per sequence of the per-query table.")
    args = parser.parse_args()
    saved = torch.load(args.scores or args.results / "index-scores.pt")
    exact, approx = saved["exact"].float(), saved["approx"]
    n = exact.shape[1]
    depths = sorted({d for d in (10, 20, 50, 100, 200, 500, 1000, 2000) if d < n} | {n})
    methods = args.methods.split(",") if args.methods else list(dict.fromkeys(m for m, _ in approx))
    rows, per_query = [], {}
    for (method, budget), scores in approx.items():
        if method not in methods:
            continue
        ranks = ranks_of_true_top10(scores, exact)
        curve = recall_curve(ranks, list(range(1, n + 1)))
        needed = next(k + 1 for k, r in enumerate(curve) if r >= GOAL - 1e-9)
        rows.append({"method": method, "bytes_per_sequence": budget, "depths": depths,
                     "recall": [curve[d - 1] for d in depths], "depth_for_goal": needed})
        if budget == args.budget:
            per_query[method] = ranks.tolist()
    summary = {"n_sequences": n, "n_queries": exact.shape[0], "goal": GOAL, "rows": rows,
               "per_query_budget": args.budget, "per_query_ranks": per_query}
    (args.results / "index-rescoring.json").write_text(json.dumps(summary, indent=1) + "\n")
    lines = [f"Share of full EK-FAC's top 10 in the top N of each compression, mean over {exact.shape[0]} queries, "
             f"{n:,} sequences; the last column: the N that reaches {GOAL:.0%}.", "",
             "| method | bytes per sequence | " + " | ".join(f"N = {d:,}" for d in depths) + " | N for 9 of 10 |",
             "|---" * (3 + len(depths)) + "|"]
    for r in sorted(rows, key=lambda r: (r["method"], r["bytes_per_sequence"])):
        lines.append(f"| {r['method']} | {r['bytes_per_sequence']:,} | " + " | ".join(f"{v:.2f}" for v in r["recall"])
                     + f" | {r['depth_for_goal']:,} ({r['depth_for_goal'] / n:.0%}) |")
    (args.results / "index-rescoring.md").write_text("\n".join(lines) + "\n")
    plot(rows, n, args.results / "index-rescoring.png")
    print("\n".join(lines))


def plot(rows: list[dict], n: int, path: Path) -> None:
    """N needed for 9 of 10 against bytes per sequence, one line per method."""
    fig, ax = plt.subplots(figsize=(6, 3.8))
    for method in dict.fromkeys(r["method"] for r in rows):
        mine = sorted((r for r in rows if r["method"] == method), key=lambda r: r["bytes_per_sequence"])
        ax.plot([r["bytes_per_sequence"] / 1000 for r in mine], [r["depth_for_goal"] / n for r in mine], "o-",
                label=method, linewidth=2.5 if method == "global" else 1.2)
    ax.axhline(100 / n, color="black", linewidth=0.8, linestyle=":")
    ax.text(ax.get_xlim()[0], 100 / n, " 100 sequences", va="bottom", fontsize=8)
    ax.set_xscale("log")
    ax.set_xticks(sorted({r["bytes_per_sequence"] / 1000 for r in rows}))
    ax.xaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
    ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("bytes per sequence (KB)")
    ax.set_ylabel(f"share of the {n:,} sequences re-scored")
    ax.set_title("re-scoring depth that returns 9 of full EK-FAC's top 10", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)


if __name__ == "__main__":
    main()
