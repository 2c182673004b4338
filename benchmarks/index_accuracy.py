"""Gradient index: accuracy against full EK-FAC scores, size per sequence, and query latency, at several sizes.

    python benchmarks/index_accuracy.py --run wherefrom-demo/run-ekfac --queries QUERIES.jsonl

For each ``--sizes`` value (numbers kept per layer) it builds an index of the run's corpus and compares the
index's scores of every query with exact EK-FAC scores (computed once with `wherefrom.score`, or read from
``--exact``): Pearson and Spearman per query (mean and minimum), overlap of the top 10 and top 100, and the
Pearson after re-scoring the index's top ``--rescore`` exactly. Latency: one query answered from an index of
``--latency-sequences`` sequences (the corpus repeated), as query gradient + index contraction. Writes a markdown
table and a plot. A benchmark, not a test: it asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from scipy.stats import pearsonr, spearmanr  # noqa: E402

from wherefrom.api import score  # noqa: E402
from wherefrom.curvature.store import load_run  # noqa: E402
from wherefrom.data.queries import read_queries  # noqa: E402
from wherefrom.data.records import read_records  # noqa: E402
from wherefrom.index import GradientIndex, build_index  # noqa: E402
from wherefrom.models.loading import load_model  # noqa: E402
from wherefrom.models.selection import select_layers  # noqa: E402
from wherefrom.options import IndexOptions, ScoreOptions  # noqa: E402
from wherefrom.scoring.query_gradients import query_gradients  # noqa: E402
from wherefrom.scoring.results import ScoreResult  # noqa: E402


def agreement(approx: torch.Tensor, exact: torch.Tensor) -> dict[str, float]:
    """Per-query Pearson/Spearman (mean, min) and top-10/top-100 overlap between two [Q, N] score matrices."""
    pearson = [float(pearsonr(a.numpy(), e.numpy())[0]) for a, e in zip(approx, exact)]
    spearman = [float(spearmanr(a.numpy(), e.numpy())[0]) for a, e in zip(approx, exact)]

    def overlap(k: int) -> float:
        return sum(len(set(torch.topk(a, k).indices.tolist()) & set(torch.topk(e, k).indices.tolist())) / k
                   for a, e in zip(approx, exact)) / len(exact)

    return {"pearson_mean": sum(pearson) / len(pearson), "pearson_min": min(pearson),
            "spearman_mean": sum(spearman) / len(spearman), "top10": overlap(10), "top100": overlap(100)}


def with_exact_top(approx: torch.Tensor, exact: torch.Tensor, k: int) -> torch.Tensor:
    """The index's scores with each query's top k replaced by exact scores (the re-scoring recipe)."""
    fixed = approx.clone()
    for q in range(approx.shape[0]):
        top = torch.topk(approx[q], k).indices
        fixed[q, top] = exact[q, top]
    return fixed


def repeated_corpus(corpus: Path, n: int, out: Path) -> Path:
    """The corpus's records repeated (with new ids) until it holds ``n`` records."""
    records = read_records(corpus)
    with out.open("w") as f:
        for i in range(n):
            record = records[i % len(records)]
            f.write(json.dumps({"id": f"{record.id}~{i // len(records)}", "text": record.text}) + "\n")
    return out


def latency(run: Path, queries: Path, index_dir: Path, repeats: int = 5) -> dict[str, float]:
    """Seconds to answer one query from an open index: its gradient, then the contraction with every row."""
    factors = load_run(run)
    loaded = load_model(factors.manifest["model"]["source"])
    layers = select_layers(loaded.model, factors.manifest["options"]["modules"])
    index = GradientIndex.open(index_dir)
    query = read_queries(queries, loaded.tokenizer, factors.manifest["options"]["max_length"])[:1]
    gradient_s, contract_s = [], []
    for _ in range(repeats):
        clock = time.perf_counter()
        gradients = query_gradients(loaded.model, layers, query, 1, quiet=True)
        gradient_s.append(time.perf_counter() - clock)
        clock = time.perf_counter()
        index.scores(gradients)
        contract_s.append(time.perf_counter() - clock)
    return {"sequences": index.n_sequences, "gradient_s": min(gradient_s), "contract_s": min(contract_s),
            "total_s": min(gradient_s) + min(contract_s)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path, required=True)
    parser.add_argument("--queries", type=Path, required=True)
    parser.add_argument("--exact", type=Path, help="A `wherefrom score` folder of the same run and queries.")
    parser.add_argument("--sizes", default="1024,2048,4096,8192,16384")
    parser.add_argument("--rescore", type=int, default=50)
    parser.add_argument("--latency-sequences", type=int, default=10_000)
    parser.add_argument("--work", type=Path, default=Path("bench-work/index"))
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    fitted = load_run(args.run).manifest["options"]
    data = {"max_length": fitted["max_length"], "pack": fitted["pack"], "batch_size": fitted["batch_size"]}
    exact = (ScoreResult.load(args.exact) if args.exact else
             score(args.run, args.queries, options=ScoreOptions(**data), quiet=True)).scores
    rows = []
    for size in [int(s) for s in args.sizes.split(",")]:
        index = build_index(args.run, args.work / f"size-{size}", options=IndexOptions(**data, size=size), quiet=True)
        approx = score(args.run, args.queries, options=ScoreOptions(**data), index=index.folder, quiet=True).scores
        rescored = agreement(with_exact_top(approx, exact, args.rescore), exact)
        rows.append({"size": size, "bytes_per_sequence": index.manifest["bytes_per_sequence"],
                     **agreement(approx, exact), f"pearson_rescored_top{args.rescore}": rescored["pearson_mean"]})
        print(rows[-1], flush=True)
    default = IndexOptions().size
    big = repeated_corpus(Path(fitted["corpus"]), args.latency_sequences, args.work / "corpus-repeated.jsonl")
    build_index(args.run, args.work / "latency", big, IndexOptions(**data, size=default), quiet=True)
    timing = latency(args.run, args.queries, args.work / "latency")
    print(timing)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "index.json").write_text(json.dumps({"rows": rows, "latency": timing, "default_size": default,
                                                      "n_queries": exact.shape[0], "n_sequences": exact.shape[1]},
                                                     indent=2) + "\n")
    write_table(rows, timing, default, args.rescore, args.out / "index.md")
    plot(rows, args.out / "index.png")


def write_table(rows: list[dict], timing: dict, default: int, rescore: int, path: Path) -> None:
    """The accuracy/size table and the latency line, as markdown."""
    lines = ["| numbers per layer | bytes per sequence | Pearson mean | Pearson min | Spearman mean | top-10 overlap "
             f"| top-100 overlap | Pearson, top {rescore} re-scored |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        mark = " (default)" if r["size"] == default else ""
        lines.append(f"| {r['size']}{mark} | {r['bytes_per_sequence']:,} | {r['pearson_mean']:.3f} | "
                     f"{r['pearson_min']:.3f} | {r['spearman_mean']:.3f} | {r['top10']:.2f} | {r['top100']:.2f} | "
                     f"{r[f'pearson_rescored_top{rescore}']:.3f} |")
    lines.append("")
    lines.append(f"Latency at the default size, {timing['sequences']:,} sequences: {timing['total_s']:.2f} s per query "
                 f"({timing['gradient_s']:.2f} s query gradient + {timing['contract_s']:.2f} s contraction).")
    path.write_text("\n".join(lines) + "\n")


def plot(rows: list[dict], path: Path) -> None:
    """Pearson and top-10 overlap against bytes per sequence."""
    fig, ax = plt.subplots(figsize=(6, 3.6))
    sizes = [r["bytes_per_sequence"] / 1024 for r in rows]
    ax.plot(sizes, [r["pearson_mean"] for r in rows], "o-", label="Pearson (mean over queries)")
    ax.plot(sizes, [r["top10"] for r in rows], "s--", label="top-10 overlap")
    ax.set_xscale("log")
    ax.set_xlabel("index size per sequence (KiB)")
    ax.set_ylabel("agreement with full EK-FAC")
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=150)


if __name__ == "__main__":
    main()
