"""Run one benchmark stage as a subprocess: its wall time, the CPU time (user + system) of its process tree, the
peak resident memory of that tree and, when a GPU is watched, the peak GPU memory in use while it ran.

The CPU time is the growth of this process's RUSAGE_CHILDREN over the stage (the stage's processes once waited
for), so stages must run one at a time. On a shared machine it is the steadier measure: another job's load
stretches wall time but not, to first order, the CPU seconds of a single-threaded stage.

Both peaks are polled every POLL_SECONDS. GPU memory is read through NVML as the device's memory in use minus
what was in use before the stage started, so it counts everything the stage's processes hold on the GPU (CUDA
context, caching allocator, every child process) and nothing else, provided no other job uses the GPU.
"""

from __future__ import annotations

import resource
import shlex
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

POLL_SECONDS = 0.05
GB = 1e9
REPO_ROOT = Path(__file__).resolve().parent.parent


@dataclass
class StageRun:
    """One measured subprocess."""

    name: str
    wall_s: float
    peak_rss_gb: float
    peak_gpu_gb: float | None = None
    cpu_s: float | None = None


class StageFailed(RuntimeError):
    """A stage exited with an error, or ran past its time budget and was stopped."""

    def __init__(self, message: str, wall_s: float, timed_out: bool, returncode: int | None) -> None:
        super().__init__(message)
        self.wall_s = wall_s
        self.timed_out = timed_out
        self.returncode = returncode


class GpuMemory:
    """Memory in use on one GPU (NVML), relative to what was in use when `baseline()` was last called."""

    def __init__(self, index: int = 0) -> None:
        import pynvml  # nvidia-ml-py; present wherever the NVIDIA driver and PyTorch's CUDA build are

        pynvml.nvmlInit()
        self._nvml = pynvml
        self._handle = pynvml.nvmlDeviceGetHandleByIndex(index)
        self._base = 0
        self.baseline()

    def used(self) -> int:
        return int(self._nvml.nvmlDeviceGetMemoryInfo(self._handle).used)

    def baseline(self) -> None:
        self._base = self.used()

    def above_baseline(self) -> int:
        return max(0, self.used() - self._base)


def run_measured(name: str, command: list[str], env: dict[str, str], log_path: Path,
                 timeout_s: float | None = None, gpu: GpuMemory | None = None) -> StageRun:
    """Run `command` to completion (or stop its process tree after `timeout_s`); its wall time and peaks.

    Raises StageFailed when the command fails or is stopped, with the log's tail in the message.
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    print(f"[{name}] {shlex.join(command)}", flush=True)
    if gpu is not None:
        gpu.baseline()
    peak, peak_gpu, timed_out = 0, 0, False
    with open(log_path, "w") as log:
        cpu_start = _children_cpu_s()
        start = time.perf_counter()
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=REPO_ROOT)
        watched = psutil.Process(process.pid)
        while process.poll() is None:
            peak = max(peak, _tree_rss(watched))
            if gpu is not None:
                peak_gpu = max(peak_gpu, gpu.above_baseline())
            if timeout_s is not None and time.perf_counter() - start > timeout_s:
                timed_out = True
                _stop_tree(watched)
                break
            time.sleep(POLL_SECONDS)
        process.wait()
        wall = time.perf_counter() - start
        cpu = _children_cpu_s() - cpu_start
    if timed_out or process.returncode != 0:
        tail = log_path.read_text(errors="replace")[-3000:]
        reason = f"stopped at its budget of {timeout_s:.0f} s" if timed_out else f"failed with exit code {process.returncode}"
        raise StageFailed(f"{name} {reason}; log {log_path}:\n{tail}", wall, timed_out, process.returncode)
    gpu_note = f", peak GPU {peak_gpu / GB:.2f} GB" if gpu is not None else ""
    print(f"[{name}] {wall:.1f}s ({cpu:.1f} CPU s), peak RSS {peak / GB:.2f} GB{gpu_note}", flush=True)
    return StageRun(name=name, wall_s=wall, peak_rss_gb=peak / GB, peak_gpu_gb=peak_gpu / GB if gpu else None,
                    cpu_s=cpu)


def _children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _tree_rss(process: psutil.Process) -> int:
    total = 0
    try:
        members = [process, *process.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0
    for member in members:
        try:
            total += member.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return total


def _stop_tree(process: psutil.Process) -> None:
    """Kill a process and all its descendants (children first, so none is re-parented and left running)."""
    try:
        members = [*process.children(recursive=True), process]
    except psutil.NoSuchProcess:
        return
    for member in members:
        try:
            member.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(members, timeout=10)
