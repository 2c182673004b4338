"""What `score --per-unit K` adds to `score`'s time on the peer-benchmark workload (benchmarks/workload.py).

Fits once (as benchmarks/compare.py does: all MLP linears, EK-FAC, empirical Fisher, 64-token sequences), then
times `wherefrom score` processes without and with `--per-unit K`, alternating so that the load of a shared
machine falls on both alike, and reports the median of each and their ratio, in wall time and in CPU time
(user + system of the process: steadier than wall time when other jobs share the cores).

Run: python benchmarks/units_cost.py [--reduced --passages 8 --layers 2] [--repeats 3] [--per-unit 100]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shlex
import statistics
import subprocess
import time
from pathlib import Path

from benchmarks.compare import run_measured
from benchmarks.workload import REPO_ROOT, WORK, full_workload, reduced_workload

RESULTS = Path(__file__).resolve().parent / "results"


def timed(command: list[str], env: dict[str, str], log: Path) -> tuple[float, float]:
    """Run ``command`` to completion: its wall seconds and CPU seconds (user + system)."""
    print(f"[run] {shlex.join(command)}", flush=True)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    with open(log, "w") as handle:
        subprocess.run(command, stdout=handle, stderr=subprocess.STDOUT, env=env, cwd=REPO_ROOT, check=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    print(f"[run] {wall:.1f} s wall, {cpu:.1f} s CPU", flush=True)
    return wall, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reduced", action="store_true", help="use a reduced workload")
    parser.add_argument("--passages", type=int, default=8)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3, help="score runs of each kind")
    parser.add_argument("--per-unit", type=int, default=100)
    parser.add_argument("--extra", default="", help="flags added to both score runs, e.g. '--per-token'")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--work", type=Path, default=WORK)
    parser.add_argument("--wherefrom-cmd", default="python -m wherefrom")
    args = parser.parse_args()
    workload = reduced_workload(args.passages, args.layers, args.work) if args.reduced else full_workload(args.work)
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads)}
    base, root = shlex.split(args.wherefrom_cmd), workload.runs_dir / "units-cost"
    run_dir = root / "run"
    if not (run_dir / "manifest.json").exists():
        run_measured("fit", base + ["fit", "--model", str(workload.model_dir), "--corpus", str(workload.corpus_jsonl),
                                    "--out", str(run_dir), "--modules", "mlp", "--strategy", "ekfac", "--fisher",
                                    "empirical", "--max-length", "64", "--batch-size", "8", "-q"], env, root / "fit.log")
    kinds = ("score", f"score --per-unit {args.per_unit}")
    times: dict[str, list[float]] = {kind: [] for kind in kinds}
    cpu: dict[str, list[float]] = {kind: [] for kind in kinds}
    for repeat in range(args.repeats):
        for kind, flags in (("score", []), (f"score --per-unit {args.per_unit}", ["--per-unit", str(args.per_unit)])):
            out = root / f"out-{len(flags)}-{repeat}"
            command = base + ["score", "--run", str(run_dir), "--queries", str(workload.queries_jsonl), "--corpus",
                              str(workload.corpus_jsonl), "--out", str(out), "-q", "--restart",
                              *shlex.split(args.extra), *flags]
            wall, seconds = timed(command, env, root / f"{kind.replace(' ', '_')}-{repeat}.log")
            times[kind].append(wall)
            cpu[kind].append(seconds)
    medians = {kind: statistics.median(values) for kind, values in times.items()}
    cpu_medians = {kind: statistics.median(values) for kind, values in cpu.items()}
    result = {"workload": workload.name, "extra_flags": args.extra, "threads": args.threads,
              "load_average_at_end": list(os.getloadavg()), "measured_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
              "wall_seconds": times, "cpu_seconds": cpu, "median_wall_seconds": medians,
              "median_cpu_seconds": cpu_medians, "wall_ratio": medians[kinds[1]] / medians[kinds[0]],
              "cpu_ratio": cpu_medians[kinds[1]] / cpu_medians[kinds[0]]}
    RESULTS.mkdir(exist_ok=True)
    name = f"units-cost-{workload.name}{'-' + args.extra.strip('-').replace(' ', '') if args.extra else ''}.json"
    (RESULTS / name).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("median_wall_seconds", "median_cpu_seconds", "wall_ratio", "cpu_ratio")},
                     indent=2))


if __name__ == "__main__":
    main()
