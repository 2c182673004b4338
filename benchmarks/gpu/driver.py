"""The GPU benchmark, in one call: CUDA tests, then wherefrom, Kronfluence and Bergson side by side on a ~1B
Llama-architecture model, with the floor; results written after every step, so a stopped run still reports.

  python -m benchmarks.gpu.driver --out DIR [--size h200|tiny] [--device cuda] [--deadline-s 340]
      [--started-at EPOCH] [--steps tests floor wherefrom kronfluence bergson index float32]
      [--sequences N] [--batch-size N] [--commit SHA]

Steps, in this order (each stops at its own cap and at the global deadline; a stopped or failed step is recorded
and the next one runs):
  tests        python -m pytest -m cuda over the test modules that have CUDA tests
  build        the model (random weights, bf16), a reduced copy (float32) and the corpus (benchmarks/gpu/workload.py)
  floor        one bf16 forward + backward pass over the corpus, and the float64 eigendecompositions
  wherefrom    fit + score, bf16 (reference of the Pearson columns)
  kronfluence  fit + score, bf16 (benchmarks/peers/kronfluence_run.py)
  bergson      `bergson ekfac`, bf16 (benchmarks/peers/bergson_run.py)
  float32      on the reduced model: wherefrom, Kronfluence, Bergson in float32, and wherefrom in bf16
  index        wherefrom index + score --index on the bf16 run
benchmarks/gpu/run.sh is the entry point on the device machine; benchmarks/README.md ("GPU benchmark") says how
to call it.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tarfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from benchmarks.compare import (
    Settings,
    ToolResult,
    comparisons,
    pearson_per_query,
    run_bergson,
    run_floor,
    run_kronfluence,
    run_wherefrom,
    save_scores,
)
from benchmarks.gpu import report
from benchmarks.gpu.workload import SIZES, GpuSize, sized, workloads
from benchmarks.measure import GpuMemory, StageFailed, run_measured
from benchmarks.workload import REPO_ROOT, Workload

STEPS = ("tests", "build", "floor", "wherefrom", "kronfluence", "bergson", "float32", "index")
DEFAULT_DEADLINE_S = 340
STEP_CAPS_S = {  # the most one step may take at the default deadline (scaled with --deadline-s); the deadline cuts first
    "tests": 45, "build": 60, "floor": 45, "wherefrom": 90, "kronfluence": 90, "bergson": 90, "float32": 90,
    "index": 60,
}  # fmt: skip
RESERVE_S = 10  # kept back from the deadline for writing the results
MIN_STEP_S = 5  # a step with less time than this left is not started
TOOL_RUNNERS = {"wherefrom": run_wherefrom, "kronfluence": run_kronfluence, "bergson": run_bergson}


@dataclass
class StepRecord:
    """What became of one step."""

    name: str
    status: str  # ok | failed | over budget | not run
    wall_s: float = 0.0
    budget_s: float = 0.0
    note: str = ""


@dataclass
class Budget:
    """The end of the current step: its cap from its start, or the global deadline less RESERVE_S if earlier.
    Caps are STEP_CAPS_S scaled by `cap_scale` (the deadline over the default one)."""

    deadline: float
    cap_scale: float = 1.0
    end: float = 0.0

    def start(self, step: str) -> float:
        self.end = min(time.time() + STEP_CAPS_S[step] * self.cap_scale, self.deadline - RESERVE_S)
        return self.timeout()

    def timeout(self) -> float:
        return max(0.0, self.end - time.time())


@dataclass
class Run:
    """Everything measured so far; `report` turns it into gpu.md / gpu.json."""

    meta: dict
    steps: list[StepRecord] = field(default_factory=list)
    main: dict[str, ToolResult] = field(default_factory=dict)
    reduced: dict[str, ToolResult] = field(default_factory=dict)
    index: dict = field(default_factory=dict)
    tests: dict = field(default_factory=dict)


def run_step(run: Run, name: str, budget: Budget, action) -> None:
    """Run `action()` under the step's budget and record how it ended."""
    timeout = budget.start(name)
    if timeout < MIN_STEP_S:
        run.steps.append(StepRecord(name, "not run", note="no time left before the deadline"))
        print(f"[{name}] not run: no time left", flush=True)
        return
    start = time.perf_counter()
    try:
        note = action() or ""
        status = "ok"
    except StageFailed as failure:
        status = "over budget" if failure.timed_out else "failed"
        note = str(failure).splitlines()[0]
        print(str(failure)[-2000:], flush=True)
    except Exception as error:  # a tool's output that cannot be read back, say; the next steps still run
        status, note = "failed", f"{type(error).__name__}: {error}"
        print(f"[{name}] {note}", flush=True)
    run.steps.append(StepRecord(name, status, time.perf_counter() - start, timeout, note))


def gpu_index(device: str) -> int:
    return int(device.split(":")[1]) if ":" in device else 0


def gpu_memory(device: str) -> GpuMemory | None:
    """NVML memory watcher for a CUDA device; None on the CPU or where NVML cannot be read (no GPU column)."""
    if not device.startswith("cuda"):
        return None
    try:
        return GpuMemory(gpu_index(device))
    except Exception as error:  # pynvml missing or NVML refused: measure everything else
        print(f"GPU memory will not be measured: {type(error).__name__}: {error}", flush=True)
        return None


def machine(device: str) -> dict:
    """GPU name and driver (from NVML, so this process opens no CUDA context), torch and CPU count."""
    import torch

    info = {"device": device, "torch": torch.__version__, "cpus": os.cpu_count(), "packages": package_versions()}
    if device.startswith("cuda"):
        try:
            import pynvml

            pynvml.nvmlInit()
            handle = pynvml.nvmlDeviceGetHandleByIndex(gpu_index(device))
            info["gpu"] = pynvml.nvmlDeviceGetName(handle)
            info["gpu_memory_gb"] = round(pynvml.nvmlDeviceGetMemoryInfo(handle).total / 1e9, 1)
            info["driver"] = pynvml.nvmlSystemGetDriverVersion()
        except Exception as error:
            info["gpu"] = f"unknown ({type(error).__name__})"
    return info


def package_versions() -> dict[str, str]:
    """Installed versions of the packages the tools depend on (not imported, so nothing is initialised)."""
    from importlib import metadata

    versions = {}
    for name in ("transformers", "peft", "accelerate", "datasets", "pyarrow", "kronfluence", "bergson", "wherefrom"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "absent"
    return versions


def environment() -> dict[str, str]:
    """The tools' environment: this repository importable (benchmarks.*), no hub access, quiet tokenizers."""
    path = os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))
    return {**os.environ, "PYTHONPATH": path, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}


def cuda_test_files() -> list[str]:
    """Test modules that mark tests `cuda`. Only these are collected: other modules may import packages the GPU
    machine lacks (fastapi, playwright), and one collection error would stop the whole pytest run."""
    tests = REPO_ROOT / "tests"
    return sorted(str(p.relative_to(REPO_ROOT)) for p in tests.rglob("test_*.py") if "mark.cuda" in p.read_text())


def tests_step(run: Run, env: dict[str, str], settings: Settings, logs: Path) -> str:
    """pytest -m cuda over the modules that have CUDA tests; exit 5 (nothing selected) is not a failure."""
    files = cuda_test_files()
    if not files:
        run.tests = {"summary": "no test module marks tests `cuda`"}
        return run.tests["summary"]
    command = [sys.executable, "-m", "pytest", "-m", "cuda", "-q", "-p", "no:cacheprovider", *files]
    log = logs / "pytest-cuda.log"
    try:
        stage = run_measured("pytest -m cuda", command, env, log, settings.stage_timeout())
        run.tests = {"wall_s": stage.wall_s, "exit_code": 0, "files": files}
    except StageFailed as failure:
        run.tests = {"wall_s": failure.wall_s, "exit_code": failure.returncode, "files": files}
        if failure.returncode != 5:
            run.tests["summary"] = pytest_summary(log)
            raise
    run.tests["summary"] = pytest_summary(log)
    return run.tests["summary"]


def pytest_summary(log: Path) -> str:
    """pytest's last summary line ('3 passed, 1 skipped in 4.2s'), or the log's last line."""
    lines = [line.strip("= ") for line in log.read_text(errors="replace").splitlines() if line.strip()]
    for line in reversed(lines):
        if " in " in line and any(word in line for word in ("passed", "failed", "skipped", "error", "deselected")):
            return line
    return lines[-1] if lines else "no output"


def build_step(size_name: str, size: GpuSize, work: Path, device: str, env: dict[str, str], settings: Settings,
               logs: Path) -> str:
    """Build the workload in a subprocess (so its budget can stop it)."""
    shutil.rmtree(work, ignore_errors=True)
    command = [sys.executable, "-m", "benchmarks.gpu.workload", "--size", size_name, "--sequences",
               str(size.sequences), "--batch-size", str(size.batch_size), "--root", str(work), "--device", device]  # fmt: skip
    stage = run_measured("build workload", command, env, logs / "build.log", settings.stage_timeout())
    return f"{stage.wall_s:.1f} s"


def tool_step(results: dict[str, ToolResult], key: str, tool: str, workload: Workload, env: dict[str, str],
              settings: Settings) -> str:
    """One tool on one workload; only its scores, timings and logs are kept on disk afterwards."""
    tool_dir = workload.runs_dir / key.replace(" ", "-")
    shutil.rmtree(tool_dir, ignore_errors=True)
    tool_dir.mkdir(parents=True)
    runner = run_floor if tool == "floor" else TOOL_RUNNERS[tool]
    results[key] = runner(workload, tool_dir, env, settings)
    if tool in ("kronfluence", "bergson"):  # their factors take many GB of the device's disk
        prune(tool_dir)
    return f"{results[key].total_s:.1f} s"


def prune(tool_dir: Path) -> None:
    """Delete everything under a tool's folder except scores, timings and logs."""
    for path in tool_dir.iterdir():
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        elif path.suffix not in (".npy", ".json", ".log"):
            path.unlink()


def index_step(run: Run, workload: Workload, env: dict[str, str], settings: Settings) -> str:
    """`wherefrom index` on the bf16 run, then `score --index --rescore 0` (the index's own scores of every
    sequence, no exact rescoring); Pearson of those scores with the full EK-FAC ones."""
    from safetensors.torch import load_file

    tool_dir = workload.runs_dir / "wherefrom"
    run_dir, index_dir, out_dir = tool_dir / "run", tool_dir / "index", tool_dir / "out-index"
    for path in (index_dir, out_dir):
        shutil.rmtree(path, ignore_errors=True)
    build = settings.measure(
        "wherefrom index", settings.wherefrom_cmd + ["index", "--run", str(run_dir), "--out", str(index_dir),
                                                     *settings.device_flags(), "-q"],
        env, tool_dir / "index.log",
    )  # fmt: skip
    run.index = {"build_s": build.wall_s, "build_peak_gpu_gb": build.peak_gpu_gb}
    query = settings.measure(
        "wherefrom score --index --rescore 0", settings.wherefrom_cmd + [
            "score", "--run", str(run_dir), "--index", str(index_dir), "--rescore", "0", "--queries",
            str(workload.queries_jsonl), "--out", str(out_dir), *settings.device_flags(), "-q"],
        env, tool_dir / "score-index.log",
    )  # fmt: skip
    scores = load_file(str(out_dir / "scores.safetensors"))["scores"].float().numpy()
    full = run.main["wherefrom"].scores_path
    run.index.update(
        score_s=query.wall_s, score_peak_gpu_gb=query.peak_gpu_gb, scores_path=save_scores(out_dir, scores),
        index_bytes=sum(p.stat().st_size for p in index_dir.rglob("*") if p.is_file()),
        pearson_vs_full=pearson_per_query(scores, np.load(full)) if full else None,
    )
    return f"build {build.wall_s:.1f} s, score {query.wall_s:.1f} s"


def float32_step(run: Run, workload: Workload, env: dict[str, str], settings: Settings) -> str:
    """The three tools in float32 on the reduced model, then wherefrom in bf16 on it (bf16 vs float32)."""
    fp32 = replace(settings, dtype="float32")
    done = []
    for key, tool, chosen in (("wherefrom", "wherefrom", fp32), ("kronfluence", "kronfluence", fp32),
                              ("bergson", "bergson", fp32), ("wherefrom bf16", "wherefrom", settings)):  # fmt: skip
        try:
            tool_step(run.reduced, key, tool, workload, env, chosen)
            done.append(key)
        except StageFailed as failure:
            if failure.timed_out:
                raise
            print(str(failure)[-2000:], flush=True)
    return "ran: " + ", ".join(done)


def write_results(run: Run, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    main_cmp = comparisons(run.main) if any(r.scores_path for r in run.main.values()) else None
    reduced_cmp = comparisons(run.reduced) if any(r.scores_path for r in run.reduced.values()) else None
    payload = report.payload(run, main_cmp, reduced_cmp)
    (out / "gpu.json").write_text(json.dumps(payload, indent=2, default=str))
    (out / "gpu.md").write_text(report.markdown(payload))


def archive_logs(work: Path, out: Path) -> None:
    """Every stage's log in one small archive next to the results."""
    with tarfile.open(out / "logs.tar.gz", "w:gz") as archive:
        for log in sorted(work.rglob("*.log")):
            archive.add(log, arcname=str(log.relative_to(work)))


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="folder for gpu.md, gpu.json and logs.tar.gz")
    parser.add_argument("--size", choices=list(SIZES), default="h200")
    parser.add_argument("--device", default="cuda", help="cuda, cuda:N or cpu (the tiny size checks on a CPU)")
    parser.add_argument("--deadline-s", type=float, default=DEFAULT_DEADLINE_S,
                        help="seconds from --started-at to finish by; every step's cap scales with it")
    parser.add_argument("--started-at", type=float, help="epoch seconds the call began (default: now)")
    parser.add_argument("--steps", nargs="*", choices=[s for s in STEPS if s != "build"], help="default: all")
    parser.add_argument("--sequences", type=int, help="corpus size (default: the size's)")
    parser.add_argument("--batch-size", type=int, help="sequences per batch for every tool (default: the size's)")
    parser.add_argument("--work", type=Path, default=Path("/tmp/wherefrom-gpu-bench"), help="scratch folder")
    parser.add_argument("--commit", default="unknown", help="the commit being measured")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    started = args.started_at or time.time()
    budget = Budget(deadline=started + args.deadline_s, cap_scale=args.deadline_s / DEFAULT_DEADLINE_S)
    size = sized(args.size, args.sequences, args.batch_size)
    steps = set(args.steps or STEPS) | {"build"}
    gpu = gpu_memory(args.device)
    env = environment()
    logs = args.work / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    settings = Settings(
        wherefrom_cmd=[sys.executable, "-m", "wherefrom"], peers_python=Path(sys.executable), threads=os.cpu_count(),
        max_length=size.seq_len, batch_size=size.batch_size, device=args.device, dtype="bfloat16",
        floor_args=("--passes", "1", "--eigh-once-per-size"), stage_timeout=budget.timeout, gpu=gpu,
    )  # fmt: skip
    run = Run(meta={
        "commit": args.commit, "size_name": args.size, "size": size.__dict__, "parameters": size.parameters(),
        "tokens": size.sequences * size.seq_len, "started_at": started, "deadline_s": args.deadline_s,
        "machine": machine(args.device), "command": " ".join(sys.argv),
    })  # fmt: skip
    main_workload = reduced_workload = None

    def record(name: str, action) -> None:
        run_step(run, name, budget, action)
        run.meta["elapsed_s"] = time.time() - started
        write_results(run, args.out)

    try:
        if "tests" in steps:
            record("tests", lambda: tests_step(run, env, settings, logs))
        record("build", lambda: build_step(args.size, size, args.work / "data", args.device, env, settings, logs))
        if run.steps[-1].status == "ok":
            main_workload, reduced_workload = workloads(args.work / "data")
        else:
            steps = {"tests"}  # nothing to measure without the workload
        for tool in ("floor", "wherefrom", "kronfluence", "bergson"):
            if tool in steps:
                record(tool, lambda tool=tool: tool_step(run.main, tool, tool, main_workload, env, settings))
        if "float32" in steps:
            record("float32", lambda: float32_step(run, reduced_workload, env, settings))
        if "index" in steps and "wherefrom" in run.main:
            record("index", lambda: index_step(run, main_workload, env, settings))
    finally:
        run.meta["elapsed_s"] = time.time() - started
        write_results(run, args.out)
        archive_logs(args.work, args.out)
    print((args.out / "gpu.md").read_text())


if __name__ == "__main__":
    main()
