"""Gradient index: agreement with full EK-FAC against bytes per sequence, for wherefrom's index and the alternatives.

    python benchmarks/index_accuracy.py --run RUN --queries QUERIES.jsonl [--corpus CORPUS] --out DIR

One pass over the corpus: each sequence's gradient is rotated into the run's eigenbasis once, full EK-FAC's
influence on every query is its inner product with the preconditioned query over every entry (the quantity
`wherefrom score` computes; tests/index/test_index.py checks that a 'full' index equals it), and every compression
of benchmarks/index_compressions.py at every ``--budgets`` value gives its approximate influence from the same
gradient. Nothing but the score matrices is kept, so the corpus can be large. Per method and budget: Pearson
and Spearman with full EK-FAC per query (mean, min), overlap of the top 10, the share of full EK-FAC's top 10
inside the approximation's top ``--rescore``, and the overlap of the top 10 after re-scoring that top exactly
(what `wherefrom score --index` answers by default). Writes index.json, index.md and index.png to ``--out``.
A benchmark, not a test: it asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from scipy.stats import pearsonr, spearmanr  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from index_compressions import FINE, METHODS, Compression, FineSketch, Layer, LayerBasis, make  # noqa: E402

from wherefrom.curvature.blocks import BlockDiagonal  # noqa: E402
from wherefrom.curvature.opening import open_run  # noqa: E402
from wherefrom.data.batching import Batch  # noqa: E402
from wherefrom.data.queries import read_queries  # noqa: E402
from wherefrom.engine.execution import start_execution  # noqa: E402
from wherefrom.engine.passes import Accumulator, Checkpoints, PassPlan, run_pass  # noqa: E402
from wherefrom.engine.stream import Labels, LayerBatch  # noqa: E402
from wherefrom.index.budget import row_layout  # noqa: E402
from wherefrom.options import ScoreOptions  # noqa: E402
from wherefrom.scoring.generation import complete_queries  # noqa: E402
from wherefrom.scoring.query_gradients import query_gradients  # noqa: E402


class Rotation:
    """One layer's eigenbasis: the gradient's rows (Ds, ā) rotated, (Ds Q_S, ā Q_A), and g̃ = Q_Sᵀ g Q_A from them."""

    def __init__(self, Q_S: torch.Tensor, Q_A: torch.Tensor) -> None:
        self.Q_S, self.Q_A = (Q.dense() if isinstance(Q, BlockDiagonal) else Q for Q in (Q_S, Q_A))
        self.Q_S, self.Q_A = self.Q_S.float(), self.Q_A.float()

    def rows(self, ds: torch.Tensor, a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return ds.float() @ self.Q_S, a.float() @ self.Q_A

    def __call__(self, ds: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        return torch.einsum("bto,bti->boi", *self.rows(ds, a))


class Comparison(Accumulator):
    """Consumes the corpus stream layer by layer: full EK-FAC's and every compression's scores of each sequence
    against the queries. One layer's rotated gradient is held at a time."""

    def __init__(self, rotations: dict[str, Rotation], bases: dict[str, LayerBasis],
                 preconditioned: dict[str, torch.Tensor], compressions: dict[tuple[str, int], Compression],
                 fine: FineSketch, n_sequences: int, report: Callable[[int], None], every: int) -> None:
        self.rotations, self.bases, self.fine = rotations, bases, fine
        self.preconditioned = {name: p.flatten(1) for name, p in preconditioned.items()}
        self.compressions = compressions
        n_queries = len(next(iter(preconditioned.values())))
        query_fine = torch.zeros(n_queries, FINE)
        self.query_rows = {key: torch.zeros(n_queries, c.values) for key, c in compressions.items()}
        for name, p in self.preconditioned.items():  # one layer's whitened queries at a time
            layer = Layer(name, p, p * bases[name].root)
            fine.add(layer, query_fine)
            for key, compression in compressions.items():
                compression.query_layer(layer, self.query_rows[key])
        self.query_rows = {key: c.finish(self.query_rows[key], query_fine, rounded=False)
                           for key, c in compressions.items()}
        self.exact = torch.zeros(n_queries, n_sequences, dtype=torch.float64)
        self.seen = torch.zeros(n_sequences, dtype=torch.bool)
        self.approx = {key: torch.zeros(n_queries, n_sequences) for key in compressions}
        self.done, self.batches, self.report, self.every = 0, 0, report, every
        self.rows: torch.Tensor | None = None
        self.batch_rows: dict[tuple[str, int], torch.Tensor] = {}
        self.batch_fine: torch.Tensor | None = None
        self.batch_exact: torch.Tensor | None = None

    def begin(self, batch: Batch) -> None:
        self.rows = batch.rows.cpu()
        n = self.rows.numel()
        self.batch_rows = {key: torch.zeros(n, c.values) for key, c in self.compressions.items()}
        self.batch_fine = torch.zeros(n, FINE)
        self.batch_exact = torch.zeros(len(self.exact), n, dtype=torch.float64)

    def layer(self, name: str, layer: LayerBatch) -> None:
        if name not in self.preconditioned:
            return
        ds, a = self.rotations[name].rows(layer.output_grads.cpu(), layer.inputs.cpu())
        g = torch.einsum("bto,bti->boi", ds, a).flatten(1)
        self.batch_exact += (self.preconditioned[name] @ g.T).double()
        current = Layer(name, g, g / self.bases[name].root, ds, a)
        self.fine.add(current, self.batch_fine)
        for key, compression in self.compressions.items():
            compression.layer(current, self.batch_rows[key])

    def end(self, loss: torch.Tensor) -> None:
        self.exact[:, self.rows] = self.batch_exact
        self.seen[self.rows] = True
        for key, compression in self.compressions.items():
            self.approx[key][:, self.rows] = self.query_rows[key] @ compression.finish(self.batch_rows[key],
                                                                                        self.batch_fine).T
        self.batch_rows, self.batch_fine = {}, None
        self.done += self.rows.numel()
        self.batches += 1
        if self.batches % self.every == 0:
            self.report(self.done)

    def state(self) -> dict[str, torch.Tensor]:
        return {}

    def merge(self, state: dict[str, torch.Tensor]) -> None:
        """Single process only: nothing to merge."""

    def totals(self) -> dict[str, torch.Tensor]:
        return {}


def agreement(approx: torch.Tensor, exact: torch.Tensor, rescore: list[int]) -> dict[str, float]:
    """Per query Pearson/Spearman, top-10 overlap, and for each k in ``rescore`` the share of the exact top 10 in
    the approximation's top k, which is the top-10 overlap once that top k is re-scored exactly (the exact top 10
    of the candidates is the true top 10 restricted to them); means over queries (and the worst Pearson)."""
    pearson = [float(pearsonr(a.numpy(), e.numpy())[0]) for a, e in zip(approx, exact)]
    spearman = [float(spearmanr(a.numpy(), e.numpy())[0]) for a, e in zip(approx, exact)]
    mean = lambda values: sum(values) / len(values)  # noqa: E731
    result = {"pearson_mean": mean(pearson), "pearson_min": min(pearson), "spearman_mean": mean(spearman)}
    for k in [10, *rescore]:
        result[f"top10_in_top{k}"] = mean([len(set(torch.topk(e, 10).indices.tolist())
                                               & set(torch.topk(a, min(k, a.numel())).indices.tolist())) / 10
                                           for a, e in zip(approx, exact)])
    return result


def parse_budget(text: str) -> int:
    """Bytes per sequence of a --budgets entry ('64KB'), with the index's own parser."""
    return row_layout(text, 10**12).bytes_per_sequence


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path, required=True)
    parser.add_argument("--queries", type=Path, required=True)
    parser.add_argument("--corpus", type=Path, help="Default: the run's corpus.")
    parser.add_argument("--max-length", type=int, help="Default: the run's.")
    parser.add_argument("--batch-size", type=int, help="Default: the run's.")
    parser.add_argument("--query-length", type=int, default=128, help="Longest query, prompt and completion.")
    parser.add_argument("--budgets", default="16KB,32KB,64KB,128KB,256KB")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--sequences", type=int, help="Only the corpus's first N sequences (default: all).")
    parser.add_argument("--rescore", default="50,100,200", help="Candidates re-scored exactly, comma-separated.")
    parser.add_argument("--max-new-tokens", type=int, default=16)
    parser.add_argument("--report-every", type=int, default=16, help="Write the results so far every n batches.")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    parser.add_argument("-q", "--quiet", action="store_true")
    args = parser.parse_args()
    clock = time.perf_counter()
    opened = open_run(args.run)
    factors, fitted, loaded, layers = opened.factors, opened.fitted, opened.loaded, opened.layers
    max_length = args.max_length or fitted["max_length"]
    batch_size = args.batch_size or fitted["batch_size"]
    sequences = opened.sequences(args.corpus, max_length, fitted["pack"])[:args.sequences]
    execution = start_execution(loaded.model)
    options = ScoreOptions(max_length=args.query_length, batch_size=batch_size, max_new_tokens=args.max_new_tokens)
    queries = complete_queries(loaded.model, loaded.tokenizer,
                               read_queries(args.queries, loaded.tokenizer, args.query_length), options, args.quiet)
    gradients = query_gradients(loaded.model, layers, queries, options.batch_size, args.quiet, execution)
    rotations, bases, preconditioned = {}, {}, {}
    for layer in layers:
        curvature = factors.curvature.layers[layer.name]
        rotations[layer.name] = Rotation(curvature.Q_S, curvature.Q_A)
        bases[layer.name] = LayerBasis(curvature.eigenvalues.float(), curvature.damping(None))
        rotated = rotations[layer.name](*gradients.factors[layer.name])
        preconditioned[layer.name] = rotated / (bases[layer.name].Lambda + bases[layer.name].damping)
    budgets = [parse_budget(b) for b in args.budgets.split(",")]
    fine = FineSketch(bases)
    compressions = {(m, b): make(m, bases, b, fine) for m in args.methods.split(",") for b in budgets}
    rescore = [int(k) for k in args.rescore.split(",")]
    total = sum(b.Lambda.numel() for b in bases.values())
    args.out.mkdir(parents=True, exist_ok=True)
    header = {"n_queries": len(queries), "n_layers": len(layers), "entries": total, "model": str(loaded.source),
              "max_length": max_length, "rescore": rescore, "batch_size": batch_size, "torch_threads": torch.get_num_threads(),
              "queries": [{"id": q.id, "prompt": q.prompt, "completion": q.completion} for q in queries]}

    def report(done: int) -> None:
        """Write the results over the sequences streamed so far (all of them at the end)."""
        seen = comparison.seen
        rows = [{"method": m, "bytes_per_sequence": b,
                 **agreement(comparison.approx[(m, b)][:, seen], comparison.exact[:, seen].float(), rescore)}
                for (m, b) in compressions]
        summary = {"rows": rows, "n_sequences": done, "n_sequences_planned": len(sequences),
                   "seconds": time.perf_counter() - clock, **header}
        torch.save({"exact": comparison.exact[:, seen], "approx": {k: v[:, seen] for k, v in comparison.approx.items()}},
                   args.out / "index-scores.pt")
        (args.out / "index.json").write_text(json.dumps(summary, indent=2) + "\n")
        write_table(summary, args.out / "index.md")
        plot(summary, args.out / "index.png")
        if not args.quiet:
            print(f"{done} sequences, {time.perf_counter() - clock:.0f} s: results in {args.out}", flush=True)

    plan = PassPlan([s.input_ids for s in sequences], [1] * len(sequences), batch_size, 10**9)
    comparison = Comparison(rotations, bases, preconditioned, compressions, fine, len(sequences), report,
                            args.report_every)
    run_pass(loaded.model, layers, plan, Labels("data"), "index-benchmark", "comparing compressions",
             lambda: comparison, Checkpoints(None, "index-benchmark"), execution, args.quiet)
    report(len(sequences))
    print((args.out / "index.md").read_text())


def write_table(summary: dict, path: Path) -> None:
    """One row per method and budget, as markdown."""
    ks = summary["rescore"]
    lines = ["| method | bytes per sequence | Pearson mean | Pearson min | Spearman mean | top-10 overlap | "
             + " | ".join(f"top 10 after re-scoring top {k}" for k in ks) + " |", "|---" * (6 + len(ks)) + "|"]
    for r in sorted(summary["rows"], key=lambda r: (r["method"], r["bytes_per_sequence"])):
        lines.append(f"| {r['method']} | {r['bytes_per_sequence']:,} | {r['pearson_mean']:.3f} | {r['pearson_min']:.3f} "
                     f"| {r['spearman_mean']:.3f} | {r['top10_in_top10']:.2f} | "
                     + " | ".join(f"{r[f'top10_in_top{k}']:.2f}" for k in ks) + " |")
    path.write_text("\n".join(lines) + "\n")


def plot(summary: dict, path: Path) -> None:
    """Pearson, top-10 overlap and top 10 after re-scoring against bytes per sequence, one line per method."""
    k = 100 if 100 in summary["rescore"] else summary["rescore"][-1]
    panels = [("pearson_mean", "Pearson (mean over queries)"), ("top10_in_top10", "top-10 overlap"),
              (f"top10_in_top{k}", f"top 10 after re-scoring top {k}")]
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.6))
    for ax, (key, label) in zip(axes, panels):
        for method in dict.fromkeys(r["method"] for r in summary["rows"]):
            rows = sorted((r for r in summary["rows"] if r["method"] == method), key=lambda r: r["bytes_per_sequence"])
            ax.plot([r["bytes_per_sequence"] / 1000 for r in rows], [r[key] for r in rows],
                    "o-" if "random" not in method or "+" in method else "s--", label=method,
                    linewidth=2.5 if method in ("global", "global+random") else 1.2)
        ax.set_xscale("log")
        ax.set_xticks(sorted({r["bytes_per_sequence"] / 1000 for r in summary["rows"]}))
        ax.xaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
        ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
        ax.set_xlabel("bytes per sequence (KB)")
        ax.set_title(label)
        ax.set_ylim(-0.05, 1.02)
        ax.grid(alpha=0.3)
    axes[2].axhline(0.9, color="black", linewidth=0.8, linestyle=":")
    axes[0].legend(fontsize=7, loc="upper left")
    fig.suptitle(f"{summary['n_sequences']:,} sequences, {summary['n_queries']} queries, {summary['n_layers']} layers "
                 f"({summary['entries']:,} entries per gradient)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)


if __name__ == "__main__":
    main()
