"""Peer comparison: wherefrom vs Kronfluence vs Bergson vs the physical floor on one EK-FAC workload.

Each tool's stages run as subprocesses, one after another, each timed (wall clock, and CPU seconds of its
process tree) and watched for peak resident memory (the RSS of its whole process tree, polled). The scores
[n_queries, n_passages] of every tool are compared with wherefrom's by Pearson correlation per query. Results: a
markdown table and a JSON.

  python benchmarks/prepare.py && bash benchmarks/setup_peers.sh      # once
  python benchmarks/compare.py                                         # full workload, every tool
  python benchmarks/compare.py --reuse-peers                           # rerun wherefrom only
  python benchmarks/compare.py --reduced --passages 8 --layers 2       # quick check
  python benchmarks/compare.py --skip wherefrom bergson                # pick tools

Per-tool results (timings + scores.npy) are kept under bench-work/runs/<workload>/<tool>/; --reuse-peers loads
the saved Kronfluence, Bergson and floor results instead of rerunning them, and the table labels them as
measured earlier.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import shutil
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path

import numpy as np
import psutil

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.measure import GpuMemory, StageRun, run_measured
from benchmarks.peers import bergson_run
from benchmarks.workload import REPO_ROOT, WORK, Workload, full_workload, reduced_workload

TOOLS = ("wherefrom", "kronfluence", "bergson", "floor")
PEERS = ("kronfluence", "bergson", "floor")
GB = 1e9


@dataclass
class ToolResult:
    """Timings and memory of one tool on the workload; where its scores were saved."""

    tool: str
    fit_s: float
    score_s: float
    total_s: float
    peak_gb: float
    stages: list[StageRun]
    scores_path: str | None
    measured_at: str
    threads: int
    timing_note: str
    reused: bool = False
    peak_gpu_gb: float | None = None
    load_average_at_start: list[float] | None = None
    extra: dict = field(default_factory=dict)
    cpu_s: float | None = None


@dataclass(frozen=True)
class Settings:
    """How every tool runs. The CPU benchmark leaves `device` unset (each tool's own default, float32); the GPU
    benchmark (benchmarks/gpu) sets device and dtype, gives each stage a time budget and watches GPU memory."""

    wherefrom_cmd: list[str]
    peers_python: Path
    threads: int
    max_length: int = 64
    batch_size: int = 8
    device: str | None = None
    dtype: str = "float32"
    floor_args: tuple[str, ...] = ()
    stage_timeout: Callable[[], float | None] = lambda: None
    gpu: GpuMemory | None = None

    def device_flags(self) -> list[str]:
        """`--device D --dtype T` where a device is set, else nothing."""
        return ["--device", self.device, "--dtype", self.dtype] if self.device else []

    def measure(self, name: str, command: list[str], env: dict[str, str], log_path: Path) -> StageRun:
        return run_measured(name, command, env, log_path, self.stage_timeout(), self.gpu)


def stage_totals(tool: str, stages: list[StageRun], fit_s: float, score_s: float, **kwargs) -> ToolResult:
    """The tool's result from its stages; CPU seconds are the stages' sum unless `cpu_s` is given."""
    stage_cpu = [stage.cpu_s for stage in stages]
    kwargs.setdefault("cpu_s", None if None in stage_cpu else sum(stage_cpu))
    return ToolResult(
        tool=tool,
        fit_s=fit_s,
        score_s=score_s,
        total_s=fit_s + score_s,
        peak_gb=max(stage.peak_rss_gb for stage in stages),
        peak_gpu_gb=max((s.peak_gpu_gb for s in stages if s.peak_gpu_gb is not None), default=None),
        stages=stages,
        measured_at=datetime.now().isoformat(timespec="seconds"),
        **kwargs,
    )


def run_wherefrom(workload: Workload, tool_dir: Path, env: dict[str, str], settings: Settings) -> ToolResult:
    from safetensors.torch import load_file

    run_dir, out_dir = tool_dir / "run", tool_dir / "out"
    for path in (run_dir, out_dir):
        shutil.rmtree(path, ignore_errors=True)
    fit = settings.measure(
        "wherefrom fit",
        settings.wherefrom_cmd + [
            "fit", "--model", str(workload.model_dir), "--corpus", str(workload.corpus_jsonl), "--out", str(run_dir),
            "--modules", "mlp", "--strategy", "ekfac", "--fisher", "empirical", "--max-length",
            str(settings.max_length), "--batch-size", str(settings.batch_size), *settings.device_flags(), "-q"],
        env, tool_dir / "fit.log",
    )  # fmt: skip
    score = settings.measure(
        "wherefrom score",
        settings.wherefrom_cmd + [
            "score", "--run", str(run_dir), "--queries", str(workload.queries_jsonl), "--corpus",
            str(workload.corpus_jsonl), "--out", str(out_dir), *settings.device_flags(), "-q"],
        env, tool_dir / "score.log",
    )  # fmt: skip
    scores = load_file(str(out_dir / "scores.safetensors"))["scores"].float().numpy()
    scores_path = save_scores(tool_dir, scores)
    return stage_totals(
        "wherefrom", [fit, score], fit.wall_s, score.wall_s, scores_path=scores_path, threads=settings.threads,
        timing_note="fit and score: wall time of the `wherefrom fit` / `wherefrom score` processes",
    )  # fmt: skip


def run_kronfluence(workload: Workload, tool_dir: Path, env: dict[str, str], settings: Settings) -> ToolResult:
    base = [str(settings.peers_python), "-m", "benchmarks.peers.kronfluence_run"]
    common = ["--model", str(workload.model_dir), "--corpus", str(workload.corpus_jsonl), "--out", str(tool_dir),
              "--batch-size", str(settings.batch_size), *settings.device_flags()]  # fmt: skip
    fit = settings.measure("kronfluence fit", base + ["fit", *common], env, tool_dir / "fit.log")
    score = settings.measure(
        "kronfluence score", base + ["score", *common, "--queries", str(workload.queries_jsonl)],
        env, tool_dir / "score.log",
    )  # fmt: skip
    return stage_totals(
        "kronfluence", [fit, score], fit.wall_s, score.wall_s, scores_path=str(tool_dir / "scores.npy"),
        threads=settings.threads,
        timing_note="fit and score: wall time of the two kronfluence_run.py processes",
    )  # fmt: skip


def run_bergson(workload: Workload, tool_dir: Path, env: dict[str, str], settings: Settings) -> ToolResult:
    run_dir = tool_dir / "run"
    shutil.rmtree(run_dir, ignore_errors=True)
    log_path = tool_dir / "ekfac.log"
    command = bergson_run.command(
        str(settings.peers_python), workload.model_dir, workload.corpus_ds, workload.queries_ds,
        run_dir, precision=bergson_run.PRECISIONS[settings.dtype],
        token_batch_size=settings.batch_size * settings.max_length if settings.device else None,
    )  # fmt: skip
    stage = settings.measure("bergson ekfac", command, env, log_path)
    fit_s = bergson_run.fit_seconds(log_path.read_text())
    scores_path = save_scores(tool_dir, bergson_run.load_scores(run_dir))
    return stage_totals(
        "bergson", [stage], fit_s, stage.wall_s - fit_s, scores_path=scores_path, threads=settings.threads,
        timing_note="one `bergson ekfac` process; fit = Bergson's own step-2 timer, score = the rest of its "
        "wall time (process start, model loads, query gradients, inverse-Hessian application, scoring)",
    )  # fmt: skip


def run_floor(workload: Workload, tool_dir: Path, env: dict[str, str], settings: Settings) -> ToolResult:
    timings_path = tool_dir / "floor.json"
    stage = settings.measure(
        "floor",
        [sys.executable, "-m", "benchmarks.floor", "--model", str(workload.model_dir),
         "--corpus", str(workload.corpus_jsonl), "--out", str(timings_path), "--batch-size", str(settings.batch_size),
         *settings.device_flags(), *settings.floor_args],
        env, tool_dir / "floor.log",
    )  # fmt: skip
    timings = json.loads(timings_path.read_text())
    return stage_totals(
        "floor", [stage], timings["fit_s"], timings["score_s"], scores_path=None, threads=settings.threads,
        cpu_s=timings["total_cpu_s"],
        timing_note="compute only (no process start or model load): fit = 2 forward+backward passes + float64 "
        "eigh of every factor, score = 1 pass; CPU s likewise (the process's CPU time over those steps); "
        "'floor + EK-FAC products' adds the covariance products, the correction's rotations, the queries' "
        "preconditioning and the contraction, timed on the workload's shapes (benchmarks/floor.py)",
        extra=timings,
    )  # fmt: skip


RUNNERS = {"wherefrom": run_wherefrom, "kronfluence": run_kronfluence, "bergson": run_bergson, "floor": run_floor}


def save_scores(tool_dir: Path, scores: np.ndarray) -> str:
    path = tool_dir / "scores.npy"
    np.save(path, scores.astype(np.float32))
    return str(path)


def save_result(tool_dir: Path, result: ToolResult) -> None:
    (tool_dir / "result.json").write_text(json.dumps(asdict(result), indent=2))


def load_result(tool_dir: Path) -> ToolResult:
    data = json.loads((tool_dir / "result.json").read_text())
    data["stages"] = [StageRun(**stage) for stage in data["stages"]]
    data["reused"] = True
    return ToolResult(**data)


def pearson_per_query(scores: np.ndarray, reference: np.ndarray) -> list[float]:
    """Pearson correlation of each query's row of `scores` with the same row of `reference`."""
    if scores.shape != reference.shape:
        raise ValueError(f"score shapes differ: {scores.shape} vs {reference.shape}; same workload?")
    return [float(np.corrcoef(row, ref)[0, 1]) for row, ref in zip(scores, reference)]


def scale_vs(scores: np.ndarray, reference: np.ndarray) -> float:
    """Least-squares slope through the origin of `scores` on `reference` (1 = same magnitude)."""
    return float((scores * reference).sum() / (reference * reference).sum())


def machine_description() -> dict:
    cpu = "unknown CPU"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {
        "cpu": cpu,
        "logical_cores": os.cpu_count(),
        "memory_gb": round(psutil.virtual_memory().total / GB, 1),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
        "python": platform.python_version(),
    }


def comparisons(results: dict[str, ToolResult]) -> dict:
    """Pearson per query and scale of every scored tool against the reference (wherefrom when it was run,
    else the first scored peer), and every pair's mean Pearson."""
    scores = {tool: np.load(r.scores_path) for tool, r in results.items() if r.scores_path}
    reference = "wherefrom" if "wherefrom" in scores else next(iter(scores), None)
    out: dict = {"reference": reference, "vs_reference": {}, "pairwise_mean_pearson": {}}
    for tool, tool_scores in scores.items():
        if tool != reference:
            out["vs_reference"][tool] = {
                "pearson": pearson_per_query(tool_scores, scores[reference]),
                "scale": scale_vs(tool_scores, scores[reference]),
            }
    names = list(scores)
    for i, first in enumerate(names):
        for second in names[i + 1:]:
            out["pairwise_mean_pearson"][f"{first} vs {second}"] = float(
                np.mean(pearson_per_query(scores[first], scores[second]))
            )
    return out


def markdown(workload: Workload, results: dict[str, ToolResult], compared: dict, machine: dict, args) -> str:
    wherefrom = results.get("wherefrom")
    floor = results.get("floor")
    reference = compared["reference"]
    n_queries = next((len(v["pearson"]) for v in compared["vs_reference"].values()), 0)
    pearson_headers = [f"Pearson q{i}" for i in range(n_queries)]
    headers = ["tool", "fit s", "score s", "total s", "peak GB", "× wherefrom", "× floor", "CPU s",
               "CPU × wherefrom", "CPU × floor", f"scale vs {reference}", *pearson_headers]  # fmt: skip
    lines = [
        f"# Peer comparison: {workload.name} workload",
        "",
        f"Generated {datetime.now().isoformat(timespec='seconds')} by `python benchmarks/compare.py "
        f"{' '.join(sys.argv[1:])}`.",
        "",
        f"Machine: {machine['cpu']}, {machine['logical_cores']} logical cores **shared with other jobs** "
        f"(load average {machine['load_average_at_start']} when this table was made), {machine['memory_gb']} GB RAM. "
        f"Every tool ran with {args.threads} thread(s) (OMP_NUM_THREADS/MKL_NUM_THREADS), CPU, float32, "
        "and once only: timings on a shared machine vary by tens of percent between runs.",
        "",
        "| " + " | ".join(headers) + " |",
        "| " + " | ".join("---" for _ in headers) + " |",
    ]
    for tool in TOOLS:
        if tool not in results:
            continue
        result = results[tool]
        label = tool + (f" (measured earlier, {result.measured_at})" if result.reused else "")
        vs = compared["vs_reference"].get(tool)
        cells = [
            label,
            f"{result.fit_s:.1f}",
            f"{result.score_s:.1f}",
            f"{result.total_s:.1f}",
            f"{result.peak_gb:.2f}",
            f"{result.total_s / wherefrom.total_s:.2f}" if wherefrom else "n/a",
            f"{result.total_s / floor.total_s:.2f}" if floor else "n/a",
            f"{result.cpu_s:.1f}" if result.cpu_s is not None else "n/a",
            cpu_ratio(result, wherefrom),
            cpu_ratio(result, floor),
            f"{vs['scale']:.3f}" if vs else ("1 (reference)" if tool == reference else "—"),
            *([f"{p:.4f}" for p in vs["pearson"]] if vs else ["—"] * n_queries),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    if floor and "ekfac_total_s" in floor.extra:
        lines.append(products_row(floor, wherefrom, len(headers) - 10))
    lines += ["", "Pairwise mean Pearson over queries:", ""]
    lines += [f"- {pair}: {value:.4f}" for pair, value in compared["pairwise_mean_pearson"].items()]
    lines += ["", "Load average (1, 5, 15 min) of the machine when each tool started:", ""]
    lines += [f"- {tool}: {results[tool].load_average_at_start or 'not recorded'}" for tool in TOOLS if tool in results]
    lines += ["", "How each tool's time was measured:", ""]
    lines += [f"- {tool}: {results[tool].timing_note}" for tool in TOOLS if tool in results]
    lines += [
        "",
        "Columns: fit s / score s / total s in seconds of wall time; peak GB = peak resident memory (10^9 bytes) "
        "of the tool's process tree over its stages (the floor's includes the model); × wherefrom and × floor = "
        "total s divided by wherefrom's and the floor's total s; CPU s = user + system CPU seconds of the tool's "
        "processes over its stages (the floor's: its compute only), steadier than wall time when other jobs share "
        "the cores, and CPU × wherefrom / CPU × floor its ratios; scale = least-squares slope of the tool's scores "
        f"on {reference}'s (1 = same magnitude); Pearson qN = correlation with {reference}'s scores over the "
        "passages for query N (the reference is wherefrom whenever it ran). Sign convention everywhere: "
        "positive = the training sequence raises log p(completion | prompt) (no peer needed a flip). See benchmarks/README.md.",
        "",
    ]
    return "\n".join(lines)


def products_row(floor: ToolResult, wherefrom: ToolResult | None, blanks: int) -> str:
    """The floor plus the products EK-FAC must compute beyond the passes (benchmarks/floor.py): the true minimum."""
    extra = floor.extra
    total, cpu = extra["ekfac_total_s"], extra["ekfac_total_cpu_s"]
    cells = [
        "floor + EK-FAC products",
        f"{extra['ekfac_fit_s']:.1f}",
        f"{extra['ekfac_score_s']:.1f}",
        f"{total:.1f}",
        "—",
        f"{total / wherefrom.total_s:.2f}" if wherefrom else "n/a",
        f"{total / floor.total_s:.2f}",
        f"{cpu:.1f}",
        f"{cpu / wherefrom.cpu_s:.2f}" if wherefrom and wherefrom.cpu_s else "n/a",
        f"{cpu / floor.cpu_s:.2f}" if floor.cpu_s else "n/a",
        *["—"] * blanks,
    ]
    return "| " + " | ".join(cells) + " |"


def cpu_ratio(result: ToolResult, reference: ToolResult | None) -> str:
    """`result`'s CPU seconds over `reference`'s, "n/a" where either was not measured."""
    if reference is None or result.cpu_s is None or reference.cpu_s is None:
        return "n/a"
    return f"{result.cpu_s / reference.cpu_s:.2f}"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--skip", nargs="*", default=[], choices=TOOLS, help="tools not to run")
    parser.add_argument("--reuse-peers", action="store_true", help="load saved peer/floor results if present")
    parser.add_argument("--reduced", action="store_true", help="use a reduced workload for quick checks")
    parser.add_argument("--passages", type=int, default=8, help="passages of the reduced workload")
    parser.add_argument("--layers", type=int, default=2, help="decoder blocks of the reduced workload")
    parser.add_argument("--threads", type=int, default=2,
                        help="OMP/MKL threads for every tool (default 2: the machine's cores; use 1 when it is busy)")
    parser.add_argument("--wherefrom-cmd", default="wherefrom", help="how to call wherefrom's CLI")
    parser.add_argument("--work", type=Path, default=WORK, help="folder prepare.py wrote (default bench-work/)")
    parser.add_argument(
        "--peers-python", type=Path,
        help="interpreter of the peers virtualenv (default: WORK/peers-venv/bin/python, see setup_peers.sh)",
    )  # fmt: skip
    parser.add_argument("--results-dir", type=Path, help="where peers.md/peers.json go (default: "
                        "benchmarks/results for the full workload, the runs folder for a reduced one)")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    args.peers_python = args.peers_python or args.work / "peers-venv" / "bin" / "python"
    workload = reduced_workload(args.passages, args.layers, args.work) if args.reduced else full_workload(args.work)
    results_dir = args.results_dir or (REPO_ROOT / "benchmarks" / "results" if not args.reduced else workload.runs_dir)
    tools = [tool for tool in TOOLS if tool not in args.skip]
    if any(tool in PEERS[:2] for tool in tools) and not args.peers_python.exists():
        raise FileNotFoundError(f"{args.peers_python} missing: run `bash benchmarks/setup_peers.sh` first")
    env = {
        **os.environ,
        "OMP_NUM_THREADS": str(args.threads),
        "MKL_NUM_THREADS": str(args.threads),
        "TOKENIZERS_PARALLELISM": "false",
        "HF_HUB_OFFLINE": "1",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")])),
    }
    settings = Settings(
        wherefrom_cmd=shlex.split(args.wherefrom_cmd), peers_python=args.peers_python, threads=args.threads
    )
    machine = machine_description()
    results: dict[str, ToolResult] = {}
    for tool in tools:
        tool_dir = workload.runs_dir / tool
        if args.reuse_peers and tool in PEERS and (tool_dir / "result.json").exists():
            results[tool] = load_result(tool_dir)
            print(f"[{tool}] reusing the result measured {results[tool].measured_at}")
            continue
        tool_dir.mkdir(parents=True, exist_ok=True)
        load_average = [round(x, 2) for x in os.getloadavg()]
        results[tool] = RUNNERS[tool](workload, tool_dir, env, settings)
        results[tool].load_average_at_start = load_average
        save_result(tool_dir, results[tool])

    compared = comparisons(results)
    results_dir.mkdir(parents=True, exist_ok=True)
    report = markdown(workload, results, compared, machine, args)
    (results_dir / "peers.md").write_text(report)
    payload = {
        "workload": workload.name,
        "machine": machine,
        "threads": args.threads,
        "results": {tool: asdict(result) for tool, result in results.items()},
        "comparison": compared,
    }
    (results_dir / "peers.json").write_text(json.dumps(payload, indent=2))
    print(report)


if __name__ == "__main__":
    main()
