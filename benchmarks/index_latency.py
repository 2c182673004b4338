"""Seconds to answer a new query from a large gradient index, on this machine's CPU.

    python benchmarks/index_latency.py --budget 64KB --compression sketch --sequences 100000 \
        [--run RUN --queries QUERIES.jsonl]

1. The contraction: a ``--sequences``-row index of the budget's width and type (int8 for a sketch, float16 for
   kept entries), generated (a random block of rows repeated:
   the timing depends on the shape, not on the values), memory-mapped from disk as `wherefrom` opens it, and one
   query contracted with every row (`GradientIndex.contract`), first call and best of ``--repeats``.
   For a sketch, ``--paths`` times the host's two contractions alternated in the same run (the bit planes of
   index/bitplanes.py, numba, and the unpacked bits through torch's int8 kernel) for 1, 2, 4 and 8 query rows (``--rows``),
   and measures how far each is from float64 products on the first ``--checked`` rows: largest error over the
   largest score, and how many of float64's top 100 of those rows each puts in its own top 100.
2. With ``--run``: the query's side on the real model: its gradient (one forward and backward pass) and its
   rotation, preconditioning and compression into the index's space; and the exact re-scoring of ``--rescore``
   corpus sequences (the default answer of `score --index`).

Writes index-latency-COMPRESSION-BUDGET.json to ``--out``. A benchmark, not a test: it asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from wherefrom.index import store
from wherefrom.index.budget import BITS, RowLayout, row_layout
from wherefrom.index.sketch import unpack_signs
from wherefrom.index.store import GradientIndex

BLOCK_ROWS = 4096
QUERY_LENGTH = 128  # longest query, prompt and completion (as benchmarks/index_accuracy.py)


def generated_index(folder: Path, n: int, layout: RowLayout, seed: int = 0) -> GradientIndex:
    """An index of ``n`` rows of ``layout`` (random bits, or random float16 values scaled to 1; a random block
    repeated), opened from disk."""
    folder.mkdir(parents=True, exist_ok=True)
    columns, dtype = layout.stored_columns, layout.storage_dtype
    path = folder / f"gradients-{n}x{columns}-{dtype}.npy"
    if not path.is_file():
        generator = np.random.default_rng(seed)
        if dtype == "uint8":
            block = generator.integers(0, 256, (BLOCK_ROWS, columns), dtype=np.uint8)
        else:
            block = generator.standard_normal((BLOCK_ROWS, columns), dtype=np.float32)
            block = (block / np.abs(block).max(1, keepdims=True)).astype(dtype)
        partial = path.with_suffix(".partial.npy")
        rows = np.lib.format.open_memmap(partial, mode="w+", dtype=dtype, shape=(n, columns))
        for lo in range(0, n, BLOCK_ROWS):
            rows[lo:lo + BLOCK_ROWS] = block[:min(BLOCK_ROWS, n - lo)]
        rows.flush()
        del rows
        partial.replace(path)
    scales = np.ones(n, dtype=np.float32)
    manifest = {"layers": [], "values": layout.values, "dtype": layout.dtype,
                "compression": "sketch" if layout.dtype == BITS else "entries"}
    return GradientIndex(folder, manifest, {}, np.load(path, mmap_mode="c"), scales, None)


def timed(repeats: int, action: Callable[[], object]) -> dict[str, float]:
    """Wall seconds of the first call and the best of ``repeats`` calls, and the CPU seconds of that best call
    (what the call costs without the other jobs sharing the cores; with one thread, its wall time on idle cores)."""
    wall, cpu = [], []
    for _ in range(repeats):
        clock, processor = time.perf_counter(), time.process_time()
        action()
        wall.append(time.perf_counter() - clock)
        cpu.append(time.process_time() - processor)
    best = min(range(repeats), key=wall.__getitem__)
    return {"first": wall[0], "best": wall[best], "cpu_of_best": cpu[best]}


def on_path(path: str, action: Callable[[], torch.Tensor]) -> Callable[[], torch.Tensor]:
    """``action`` with the sketch contracted by bit planes ('planes') or by unpacked bits ('unpacked')."""
    def run() -> torch.Tensor:
        kept = store.PLANE_QUERY_ROWS
        store.PLANE_QUERY_ROWS = 10**9 if path == "planes" else 0
        try:
            return action()
        finally:
            store.PLANE_QUERY_ROWS = kept
    return run


def compare_paths(index: GradientIndex, repeats: int, checked: int, row_counts: list[int]) -> dict[str, object]:
    """Both host contractions of a sketch, alternated, for each of ``row_counts`` query rows; and their error
    against float64."""
    if store.plane_kernel() is None:
        raise SystemExit("--paths needs numba (pip install numba)")
    generator = torch.Generator().manual_seed(1)
    queries = torch.randn(max(row_counts), index.values, generator=generator)
    on_path("planes", lambda: index.contract(queries[:1]))()  # numba's compilation (or its disk cache) first
    times: dict[str, dict[str, list[float]]] = {"planes": {}, "unpacked": {}}
    cpu: dict[str, dict[str, list[float]]] = {"planes": {}, "unpacked": {}}
    for rows in row_counts:
        for _ in range(repeats):
            for path in times:
                clock, processor = time.perf_counter(), time.process_time()
                on_path(path, lambda: index.contract(queries[:rows]))()
                times[path].setdefault(str(rows), []).append(time.perf_counter() - clock)
                cpu[path].setdefault(str(rows), []).append(time.process_time() - processor)
    best = {path: {rows: min(seconds) for rows, seconds in by_rows.items()} for path, by_rows in times.items()}
    least_cpu = {path: {rows: min(seconds) for rows, seconds in by_rows.items()} for path, by_rows in cpu.items()}
    exact = torch.cat([queries[:1].double() @ (unpack_signs(torch.from_numpy(index.gradients[lo:lo + 256])).double()
                                                * 2 - 1).T * torch.from_numpy(index.scales[lo:lo + 256]).double()
                       for lo in range(0, checked, 256)], 1)  # float64, 256 rows at a time
    top = set(exact[0].topk(100).indices.tolist())
    errors = {}
    for path in times:
        got = on_path(path, lambda: index.contract(queries[:1]))()[0, 0, :checked].double()
        errors[path] = {"largest_error_over_largest_score": float((got - exact[0]).abs().max() / exact.abs().max()),
                        "float64_top100_in_top100": len(top & set(got.topk(100).indices.tolist())) / 100}
    speedup = {rows: best["unpacked"][rows] / best["planes"][rows] for rows in best["planes"]}
    return {"best_s": best, "least_cpu_s": least_cpu, "all_s": times, "all_cpu_s": cpu, "planes_speedup": speedup,
            "against_float64": {"rows": checked, **errors}}


def query_side(run: Path, queries: Path, budget: str, compression: str, rescore: int, repeats: int
               ) -> dict[str, object]:
    """The real model's query gradient, its preconditioning into the index's space, and an exact re-scoring."""
    from wherefrom.curvature.store import load_run
    from wherefrom.data.corpus import build_sequences
    from wherefrom.data.queries import read_queries
    from wherefrom.data.records import read_records
    from wherefrom.index.projection import choose_projections
    from wherefrom.models.loading import load_model
    from wherefrom.models.selection import select_layers
    from wherefrom.options import ScoreOptions
    from wherefrom.scoring.query_gradients import query_gradients
    from wherefrom.scoring.scorer import score

    factors = load_run(run)
    fitted = factors.manifest["options"]
    loaded = load_model(factors.manifest["model"]["source"])
    layers = select_layers(loaded.model, fitted["modules"])
    _, projections = choose_projections({layer.name: factors.curvature.layers[layer.name] for layer in layers}, budget,
                                       compression)
    longest = max(fitted["max_length"], QUERY_LENGTH)
    query = [q for q in read_queries(queries, loaded.tokenizer, longest) if not q.needs_completion][:1]
    if not query:
        raise SystemExit(f"{queries} needs a query with a completion (latency of the gradient, not of generation)")
    gradients = query_gradients(loaded.model, layers, query, 1, quiet=True)
    sequences = build_sequences(read_records(fitted["corpus"]), loaded.tokenizer, fitted["max_length"], fitted["pack"])
    options = ScoreOptions(max_length=fitted["max_length"], batch_size=fitted["batch_size"])
    top = sequences[:rescore]
    return {
        "model": loaded.source, "layers": len(layers),
        "query_gradient_s": timed(repeats, lambda: query_gradients(loaded.model, layers, query, 1, quiet=True)),
        "preconditioning_s": timed(repeats, lambda: torch.cat(
            [p.precondition(*gradients.factors[name], None) for name, p in projections.items()], 1)),
        f"rescore_{len(top)}_s": timed(1, lambda: score(loaded.model, loaded.tokenizer, layers, factors.curvature,
                                                         query, top, options, quiet=True))["first"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budget", default="64KB")
    parser.add_argument("--compression", default="sketch", choices=["sketch", "entries"])
    parser.add_argument("--sequences", type=int, default=100_000)
    parser.add_argument("--run", type=Path)
    parser.add_argument("--queries", type=Path)
    parser.add_argument("--rescore", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--paths", action="store_true", help="a sketch: time both host contractions, alternated")
    parser.add_argument("--checked", type=int, default=BLOCK_ROWS, help="rows compared with float64 (--paths; at most "
                        "the generated block, which repeats)")
    parser.add_argument("--rows", default="1,2,4,8", help="numbers of query rows timed (--paths)")
    parser.add_argument("--work", type=Path, default=Path("bench-work/index-latency"))
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = parser.parse_args()
    layout = row_layout(args.budget, 10**12, args.compression)
    index = generated_index(args.work, args.sequences, layout)
    query = torch.randn(1, layout.values)
    result: dict[str, object] = {
        "budget": args.budget, "compression": args.compression, "bytes_per_sequence": layout.bytes_per_sequence,
        "values": layout.values,
        "sequences": args.sequences, "index_gigabytes": args.sequences * layout.bytes_per_sequence / 1e9,
        "contraction_s": timed(args.repeats, lambda: index.contract(query)),
        "load_average_1min": os.getloadavg()[0], "cpu_threads": torch.get_num_threads(),
    }
    if args.paths:
        result["paths"] = compare_paths(index, args.repeats, args.checked, [int(n) for n in args.rows.split(",")])
        result["load_average_1min_after"] = os.getloadavg()[0]
    if args.run is not None:
        result.update(query_side(args.run, args.queries, args.budget, args.compression, args.rescore, args.repeats))
        result["answer_s"] = (result["query_gradient_s"]["best"] + result["preconditioning_s"]["best"]
                              + result["contraction_s"]["best"])
    args.out.mkdir(parents=True, exist_ok=True)
    threads = torch.get_num_threads()
    suffix = (f"-{threads}threads" if threads > 1 else "") + ("-paths" if args.paths else "")
    path = args.out / f"index-latency-{args.compression}-{args.budget}{suffix}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
