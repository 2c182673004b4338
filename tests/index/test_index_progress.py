"""`wherefrom index` shows every long phase as it goes (on stderr), and --quiet shows none of them."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from tiny import write_workspace

PHASES = ["loading the model and the run", "reading the factors", "choosing the projections",
          "allocating the index", "indexing gradients", "writing the index"]


def wherefrom(*args: object) -> subprocess.CompletedProcess:
    """The CLI in a child process, its stderr piped (not a terminal: rich prints each finished bar once)."""
    return subprocess.run([sys.executable, "-m", "wherefrom", *map(str, args)], capture_output=True, text=True,
                          env={**os.environ, "COLUMNS": "200"}, timeout=600)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = write_workspace(tmp_path_factory.mktemp("index-progress"))
    fitted = wherefrom("fit", "--model", root / "model", "--corpus", root / "corpus.jsonl", "--out", root / "run",
                       "--batch-size", "4", "-q")
    assert fitted.returncode == 0, fitted.stderr
    return root / "run"


def test_index_names_each_phase_in_order_on_stderr(run, tmp_path):
    built = wherefrom("index", "--run", run, "--out", tmp_path / "index", "--budget", "1KB")
    assert built.returncode == 0, built.stderr
    where = [built.stderr.find(phase) for phase in PHASES]
    assert -1 not in where, built.stderr
    assert where == sorted(where), built.stderr
    assert "indexed 8 sequences" in built.stderr


def test_quiet_index_prints_nothing(run, tmp_path):
    built = wherefrom("index", "--run", run, "--out", tmp_path / "index", "--budget", "1KB", "--quiet")
    assert built.returncode == 0, built.stderr
    assert (tmp_path / "index" / "manifest.json").is_file()
    assert built.stderr == "" and built.stdout == ""
