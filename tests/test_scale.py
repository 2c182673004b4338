"""Resumable sharded runs (killed with SIGKILL mid-way) and torchrun across processes: same results."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from tiny import TEXTS, save_model_dir, tiny_llama, write_jsonl

ENV = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parents[1] / "src"),
                                                    os.environ.get("PYTHONPATH", "")]), "OMP_NUM_THREADS": "1"}


def cli(*args: object, runner: tuple[str, ...] = (sys.executable, "-m", "wherefrom")) -> list[str]:
    return [*runner, *map(str, args)]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    root = tmp_path_factory.mktemp("scale")
    save_model_dir(tiny_llama(), root / "model")
    rows = [{"id": f"d{i}", "text": f"{TEXTS[i % len(TEXTS)]} {TEXTS[(i * 3 + 1) % len(TEXTS)]}"} for i in range(240)]
    write_jsonl(root / "corpus.jsonl", rows)
    write_jsonl(root / "queries.jsonl", [{"prompt": "paris is the capital of", "completion": " france."},
                                         {"prompt": "the cat", "completion": " sat on the mat."}])
    return root


def finished_shards(checkpoint: Path) -> int:
    """How many shards a pass's checkpoint covers (0 before the first is saved)."""
    try:
        return len(load_file(str(checkpoint))["__finished_shards__"])
    except (FileNotFoundError, OSError):
        return 0


def fit_args(root: Path, out: Path, *extra: object) -> list[object]:
    return ["fit", "--model", root / "model", "--corpus", root / "corpus.jsonl", "--out", out, "--batch-size", 4,
            "--shard-size", 8, "--max-length", 48, "-q", *extra]


def test_a_killed_fit_resumes_to_the_identical_result(workspace, tmp_path):
    reference = tmp_path / "reference"
    subprocess.run(cli(*fit_args(workspace, reference)), env=ENV, check=True)
    run = tmp_path / "killed"
    process = subprocess.Popen(cli(*fit_args(workspace, run)), env=ENV)
    shards = run / ".shards"
    correction = shards / "correction.rank0-of-1.safetensors"
    deadline = time.time() + 120
    while time.time() < deadline and finished_shards(correction) < 3:
        time.sleep(0.01)  # kill in the second pass, after a few of its shards
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (run / "manifest.json").exists(), "the run finished before it could be killed"
    finished_before = finished_shards(correction)
    assert 3 <= finished_before < 30 and finished_shards(shards / "covariance.rank0-of-1.safetensors") == 30
    changed = subprocess.run(cli(*fit_args(workspace, run, "--seed", 5)), env=ENV, capture_output=True, text=True)
    assert changed.returncode == 2 and "--restart" in changed.stderr  # other options: refused, shards kept
    assert finished_shards(correction) == finished_before
    subprocess.run(cli(*fit_args(workspace, run)), env=ENV, check=True)  # the same command resumes
    got, expected = load_file(str(run / "factors.safetensors")), load_file(str(reference / "factors.safetensors"))
    assert got.keys() == expected.keys()
    for key in expected:
        assert torch.equal(got[key], expected[key]), key
    assert not shards.exists()


def test_a_killed_index_build_resumes_to_the_identical_index(workspace, tmp_path):
    run = tmp_path / "run"
    subprocess.run(cli(*fit_args(workspace, run)), env=ENV, check=True)
    rows = [{"id": f"r{i}", "text": f"{TEXTS[i % len(TEXTS)]} {TEXTS[(i * 5 + 2) % len(TEXTS)]}"} for i in range(1200)]
    corpus = write_jsonl(tmp_path / "large.jsonl", rows)

    def index_args(out: Path) -> list[str]:
        return cli("index", "--run", run, "--corpus", corpus, "--out", out, "--batch-size", 2, "--shard-size", 4,
                   "--budget", 512, "-q")

    subprocess.run(index_args(tmp_path / "reference"), env=ENV, check=True)
    killed = tmp_path / "killed"
    assert 5 <= kill_after_shards(index_args(killed), killed / ".shards" / "index.rank0-of-1.safetensors", 5) < 300
    subprocess.run(index_args(killed), env=ENV, check=True)
    for name in ("gradients.npy", "scales.npy", "projections.safetensors"):
        assert (killed / name).read_bytes() == (tmp_path / "reference" / name).read_bytes(), name
    assert not (killed / ".shards").exists()


def kill_after_shards(args: list[str], checkpoint: Path, shards: int) -> int:
    """Run ``args``, SIGKILL it once ``checkpoint`` holds ``shards`` finished shards (before it finishes); returns
    how many it holds then."""
    process = subprocess.Popen(args, env=ENV)
    deadline = time.time() + 120
    while time.time() < deadline and finished_shards(checkpoint) < shards:
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (checkpoint.parent.parent / "manifest.json").exists(), "it finished before it could be killed"
    return finished_shards(checkpoint)


def test_a_killed_scoring_resumes_to_the_identical_scores(workspace, tmp_path):
    run = tmp_path / "run"
    subprocess.run(cli(*fit_args(workspace, run)), env=ENV, check=True)

    def score_args(out: Path) -> list[str]:
        return cli("score", "--run", run, "--queries", workspace / "queries.jsonl", "--out", out, "--batch-size", 2,
                   "--shard-size", 4, "--per-token", "--per-layer", "-q")

    subprocess.run(score_args(tmp_path / "reference"), env=ENV, check=True)
    killed = tmp_path / "killed"
    assert 3 <= kill_after_shards(score_args(killed), killed / ".shards" / "scores.rank0-of-1.safetensors", 3) < 60
    subprocess.run(score_args(killed), env=ENV, check=True)
    for name in ("scores.safetensors", "sequences.jsonl", "queries.jsonl", "results.jsonl"):
        assert (killed / name).read_bytes() == (tmp_path / "reference" / name).read_bytes(), name
    assert not (killed / ".shards").exists()


TORCHRUN = (sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "wherefrom")


def run_single_and_distributed(workspace: Path, tmp_path: Path, device: str) -> None:
    """fit, score and index on ``device`` in one process and in two under torchrun; checks each folder records
    where and in how many processes it ran."""
    for name, runner, processes in (("single", (sys.executable, "-m", "wherefrom"), 1), ("distributed", TORCHRUN, 2)):
        on = ("--device", device)
        subprocess.run(cli(*fit_args(workspace, tmp_path / f"run-{name}", *on), runner=runner), env=ENV, check=True)
        subprocess.run(cli("score", "--run-dir", tmp_path / f"run-{name}", "--queries", workspace / "queries.jsonl",
                           "--out", tmp_path / f"out-{name}", "--per-layer", "--per-token", "-q", *on, runner=runner),
                       env=ENV, check=True)
        subprocess.run(cli("index", "--run-dir", tmp_path / f"run-{name}", "--out", tmp_path / f"index-{name}", "-q",
                           *on, runner=runner), env=ENV, check=True)
        for folder in ("run", "out", "index"):
            execution = json.loads((tmp_path / f"{folder}-{name}" / "manifest.json").read_text())["execution"]
            assert execution["processes"] == processes, (folder, name, execution)
            assert execution["device"].split(":")[0] == device, (folder, name, execution)


def test_torchrun_with_two_processes_matches_one_process(workspace, tmp_path):
    """Two processes on the CPU (gloo), whatever GPUs the machine has: --device cpu says so (without it, a
    one-GPU machine would give the second process GPU 1, which it does not have)."""
    run_single_and_distributed(workspace, tmp_path, "cpu")
    compare_single_and_distributed(tmp_path)


@pytest.mark.cuda
@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA devices (one per process, over NCCL)")
def test_torchrun_with_two_gpus_over_nccl_matches_one_gpu(workspace, tmp_path):
    run_single_and_distributed(workspace, tmp_path, "cuda")
    compare_single_and_distributed(tmp_path)


def compare_single_and_distributed(tmp_path: Path) -> None:
    """The distributed run's factors, scores and index rows equal the single process's (to the sums' rounding)."""
    single = load_file(str(tmp_path / "run-single" / "factors.safetensors"))
    distributed = load_file(str(tmp_path / "run-distributed" / "factors.safetensors"))
    for key in single:
        if key.endswith("eigenvalues"):
            torch.testing.assert_close(distributed[key], single[key], rtol=1e-4, atol=1e-7 * float(single[key].max()))
    a = load_file(str(tmp_path / "out-single" / "scores.safetensors"))
    b = load_file(str(tmp_path / "out-distributed" / "scores.safetensors"))
    for key in ("scores", "per_layer", "per_token"):
        torch.testing.assert_close(b[key], a[key], rtol=1e-4, atol=1e-4 * float(a[key].abs().max()))
    rows = [np.load(tmp_path / f"index-{name}" / "gradients.npy").astype(np.float32) for name in ("single", "distributed")]
    np.testing.assert_allclose(rows[1], rows[0], atol=2e-3)  # every rank wrote its shards' rows (float16, scaled to 1)
