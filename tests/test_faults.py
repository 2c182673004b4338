"""Faults at the worst moment, through the command line: numbers an option cannot mean, a full disk, SIGTERM.
Each ends in one line naming the problem, and nothing saved before is changed (hashed)."""

from __future__ import annotations

import errno
import hashlib
import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from tiny import TEXTS, write_jsonl, write_workspace
from typer.testing import CliRunner

from wherefrom.cli.common import no_space_left, run_action
from wherefrom.cli.main import app

runner = CliRunner()
NO_SPACE = "No space left on device; nothing finished was lost"
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parents[1] / "src"),
                                                    os.environ.get("PYTHONPATH", "")]), "OMP_NUM_THREADS": "1"}


def invoke(*args: object):
    return runner.invoke(app, [str(a) for a in args])


def hashes(*roots: Path) -> dict[str, str]:
    """sha256 of every file under ``roots``, by path."""
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest()
            for root in roots for p in sorted(root.rglob("*")) if p.is_file()}


def one_line(result) -> str:  # noqa: ANN001 - click's Result
    """The refusal's single line; asserts exit 2 and no traceback."""
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == 2, result.output
    assert isinstance(result.exception, SystemExit), result.exception
    assert "Traceback" not in result.output and len(lines) == 1, result.output
    return lines[0]


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    root = write_workspace(tmp_path_factory.mktemp("faults"))
    fit = invoke("fit", "--model", root / "model", "--corpus", root / "corpus.jsonl", "--out", root / "run",
                 "--max-length", 32, "-q")
    assert fit.exit_code == 0, fit.output
    scored = invoke("score", "--run", root / "run", "--queries", root / "queries.jsonl", "--out", root / "out", "-q")
    assert scored.exit_code == 0, scored.output
    return root


SCORE = ("score", "--run", "{run}", "--queries", "{queries}", "--out", "{out}", "-q")
CHECK = ("check", "--run", "{run}")
FLOATS = [  # every float option of every command, with values it cannot mean
    *[(SCORE, "--damping", bad) for bad in ("nan", "inf", "-inf", "-1", "0", "1e400")],
    *[(SCORE, "--temperature", bad) for bad in ("nan", "inf", "0", "-1")],
    *[(SCORE, "--top-p", bad) for bad in ("nan", "inf", "0", "1.5")],
    *[(CHECK, "--tolerance", bad) for bad in ("nan", "inf", "0")],
    *[(CHECK, "--budget", bad) for bad in ("nan", "inf", "-5")],
    *[(CHECK, "--damping", bad) for bad in ("nan", "inf", "-1")],
    *[(("validate", "lds", "--config", "reduced", "--out", "{out}"), "--fraction", bad) for bad in ("nan", "1", "0")],
]


@pytest.mark.parametrize(("command", "flag", "bad"), FLOATS, ids=[f"{c[0]}{f}={b}" for c, f, b in FLOATS])
def test_every_float_option_refuses_what_it_cannot_mean(ws, command, flag, bad):
    args = [part.format(run=ws / "run", queries=ws / "queries.jsonl", out=ws / "out") for part in command]
    before = hashes(ws)
    line = one_line(invoke(*args, f"{flag}={bad}"))
    assert flag in line and "Give a number" in line, line
    assert hashes(ws) == before


def test_a_finite_damping_in_range_is_still_taken(ws, tmp_path):
    result = invoke("score", "--run", ws / "run", "--queries", ws / "queries.jsonl", "--out", tmp_path / "out",
                    "--damping", "1e-3", "-q")
    assert result.exit_code == 0, result.output
    scores = load_file(str(tmp_path / "out" / "scores.safetensors"))["scores"]
    assert scores.isfinite().all() and scores.abs().max() > 0


def test_no_space_is_recognised_inside_other_libraries_errors():
    assert no_space_left(OSError(errno.ENOSPC, "No space left on device"))
    rust = SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")  # as met
    assert no_space_left(rust)
    try:
        try:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        except OSError as exc:
            raise RuntimeError("writing failed") from exc
    except RuntimeError as wrapped:
        assert no_space_left(wrapped)
    assert not no_space_left(SafetensorError("Error while deserializing header: HeaderTooLarge"))
    assert not no_space_left(OSError(errno.EACCES, "Permission denied"))


@pytest.fixture()
def small_disk(tmp_path):
    """A 1 MiB file system (tmpfs), mounted for the test: needs root; skipped where mounting is not allowed."""
    mount = tmp_path / "disk"
    mount.mkdir()
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], capture_output=True)
    if made.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here ({made.stderr.decode().strip() or 'not root'})")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(disk: Path, leave: int) -> None:
    """Fill ``disk`` until about ``leave`` bytes are free."""
    free = os.statvfs(disk).f_bavail * os.statvfs(disk).f_frsize
    if free > leave:
        (disk / "filler").write_bytes(b"\0" * (free - leave))


@pytest.mark.parametrize(("command", "free"), [("fit", 8192), ("index", 40_000), ("index", 150_000),
                                               ("score", 8192)])
def test_a_full_disk_is_one_line_and_the_same_command_finishes_once_there_is_room(ws, small_disk, command, free):
    """fit writes its factors through safetensors; index fills memory-mapped arrays (with 40 KB free, sparse files
    died of SIGBUS) and then writes its projections through safetensors (150 KB free); score writes safetensors
    and JSON lines: each meets ENOSPC as the same one line, exit 2."""
    out = small_disk / command
    args = {"fit": ("fit", "--model", ws / "model", "--corpus", ws / "corpus.jsonl", "--max-length", 32),
            "index": ("index", "--run", ws / "run", "--budget", "full"),
            "score": ("score", "--run", ws / "run", "--queries", ws / "queries.jsonl", "--per-token", "--per-layer")
            }[command]
    fill(small_disk, free)
    before = hashes(ws)
    line = one_line(invoke(*args, "--out", out, "-q"))
    assert NO_SPACE in line and "wherefrom bug" not in line, line
    assert hashes(ws) == before
    assert not list(out.rglob("*.partial")), "a failed write left its partial file, holding space"
    (small_disk / "filler").unlink()
    finished = invoke(*args, "--out", out, "-q")
    assert finished.exit_code == 0, finished.output
    assert (out / "manifest.json").is_file()


def test_sigterm_stops_a_long_command_with_a_message_and_it_resumes(ws, tmp_path):
    rows = [{"id": f"r{i}", "text": f"{TEXTS[i % len(TEXTS)]} {TEXTS[(i * 5 + 2) % len(TEXTS)]}"} for i in range(300)]
    corpus = write_jsonl(tmp_path / "large.jsonl", rows)
    args = [sys.executable, "-m", "wherefrom", "index", "--run", str(ws / "run"), "--corpus", str(corpus),
            "--out", str(tmp_path / "index"), "--batch-size", "2", "--shard-size", "4", "--budget", "512", "-q"]
    process = subprocess.Popen(args, env=ENV, stderr=subprocess.PIPE, text=True)
    checkpoint = tmp_path / "index" / ".shards" / "index.rank0-of-1.safetensors"
    deadline = time.time() + 120
    while time.time() < deadline and not checkpoint.is_file():
        time.sleep(0.01)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 143, stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "terminated (SIGTERM)" in lines[0] and "run the same command again" in lines[0], stderr
    assert not (tmp_path / "index" / "manifest.json").exists()
    resumed = subprocess.run(args, env=ENV, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    assert (tmp_path / "index" / "manifest.json").is_file()


def test_threads_are_set_by_the_option_or_the_environment_and_a_bad_count_is_one_line(ws, tmp_path):
    before = torch.get_num_threads()
    try:
        for args, env in (((["--threads", "2"]), {}), ([], {"WHEREFROM_THREADS": "3"})):
            result = runner.invoke(app, [*args, "report", str(ws / "out"), "-o", str(tmp_path / "r.html"),
                                         "--bootstraps", "0"], env=env)
            assert result.exit_code == 0, result.output
            assert torch.get_num_threads() == int(args[1] if args else env["WHEREFROM_THREADS"])
        line = one_line(runner.invoke(app, ["--threads", "0", "report", str(ws / "out")]))
        assert "--threads" in line and "at least 1" in line
        demo = runner.invoke(app, ["demo", "--threads", "0", "--out", str(tmp_path / "demo")])
        assert demo.exit_code == 2 and "--threads" in demo.output and not (tmp_path / "demo").exists()
    finally:
        torch.set_num_threads(before)


def test_a_librarys_future_warning_is_not_shown_during_a_command_but_other_warnings_are(monkeypatch):
    monkeypatch.setattr(sys, "warnoptions", [])  # as when python runs without -W

    def command() -> None:
        warnings.warn("`x` is deprecated and will be removed in v6", FutureWarning, stacklevel=1)
        warnings.warn("an old call", DeprecationWarning, stacklevel=1)
        warnings.warn("the corpus has 3 empty records", UserWarning, stacklevel=1)

    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        run_action(command)
    assert [w.category for w in seen] == [UserWarning]
