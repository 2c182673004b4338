"""Commands stopped at every stage boundary, their last one included: the same command run again gives exactly what
an uninterrupted run gives, and no stop ever leaves a finished-looking folder whose files disagree.

A stage boundary is a moment a command changes what is on disk for good: a rename into place (every finished
shard's state, every output file, the index's filled arrays, the manifest) or the removal of the shards. The stop
is a BaseException raised just before the k-th such change, for k = 1, 2, ... until the command gets through, so
it stops where a SIGKILL, a full disk or a power cut between two of them would; nothing of the command is
replaced. (tests/test_scale.py kills real processes with SIGKILL mid-pass.)
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from tiny import tiny_llama, write_workspace

from wherefrom.api import fit, score
from wherefrom.index import build_index
from wherefrom.options import FitOptions, IndexOptions, ScoreOptions

DATA = {"max_length": 32, "batch_size": 2, "shard_size": 3}  # 8 sequences: 3 shards per pass
OUTPUTS = {
    "fit": ("factors.safetensors",),
    "index": ("gradients.npy", "scales.npy", "self_influence.npy", "projections.safetensors"),
    "score": ("scores.safetensors", "sequences.jsonl", "queries.jsonl", "results.jsonl"),
}


class Stopped(BaseException):
    """The command was stopped at a stage boundary (a BaseException: nothing in wherefrom may catch it)."""


@contextmanager
def stop_before(k: int) -> Iterator[list[int]]:
    """Raise :class:`Stopped` just before the k-th rename or tree removal (counted from 1); yields a list whose
    length is the number of those that happened."""
    done: list[int] = []
    real_replace, real_rmtree = os.replace, shutil.rmtree

    def boundary(real: Callable, *args: object, **kwargs: object) -> object:
        if len(done) + 1 == k:
            raise Stopped
        done.append(1)
        return real(*args, **kwargs)

    os.replace = lambda *a, **kw: boundary(real_replace, *a, **kw)
    shutil.rmtree = lambda *a, **kw: boundary(real_rmtree, *a, **kw)
    try:
        yield done
    finally:
        os.replace, shutil.rmtree = real_replace, real_rmtree


def digest(folder: Path, names: tuple[str, ...]) -> dict[str, str]:
    return {name: hashlib.sha256((folder / name).read_bytes()).hexdigest() for name in names if (folder / name).is_file()}


def job(folder: Path) -> str:
    """The job a finished folder's manifest names."""
    return json.loads((folder / "manifest.json").read_text())["job"]


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    root = write_workspace(tmp_path_factory.mktemp("interrupted"), tiny_llama(dtype=torch.float64))
    fit(root / "model", root / "corpus.jsonl", root / "run", FitOptions(**DATA), quiet=True)
    fit(root / "model", root / "corpus.jsonl", root / "run-other", FitOptions(**DATA, seed=1), quiet=True)
    return root


def commands(ws: Path) -> dict[str, Callable[[Path, bool, bool], object]]:
    """Each command as (out, restart, other) -> its run; ``other``: different options, for an earlier output."""
    return {
        "fit": lambda out, restart, other: fit(ws / "model", ws / "corpus.jsonl", out,
                                               FitOptions(**DATA, seed=int(other)), quiet=True, restart=restart),
        "index": lambda out, restart, other: build_index(ws / "run-other" if other else ws / "run", out,
                                                         options=IndexOptions(**DATA, budget="700"), quiet=True,
                                                         restart=restart),
        "score": lambda out, restart, other: score(ws / "run-other" if other else ws / "run", ws / "queries.jsonl",
                                                   out=out, options=ScoreOptions(**DATA, per_token=True),
                                                   quiet=True, restart=restart),
    }


@pytest.mark.parametrize("command", ["fit", "index", "score"])
@pytest.mark.parametrize("earlier", [False, True], ids=["new-folder", "over-an-earlier-output"])
def test_a_command_stopped_at_any_boundary_is_finished_identically_by_running_it_again(ws, tmp_path, command,
                                                                                      earlier):
    run = commands(ws)[command]
    reference = tmp_path / "reference"
    run(reference, False, False)
    expected = digest(reference, OUTPUTS[command])
    assert len(expected) == len(OUTPUTS[command])
    outputs_of_job = {job(reference): expected}
    if earlier:
        run(tmp_path / "earlier", False, True)
        outputs_of_job[job(tmp_path / "earlier")] = digest(tmp_path / "earlier", OUTPUTS[command])
        assert len(set(map(str, outputs_of_job.values()))) == 2
    boundaries = None
    for k in range(1, 40):
        out = tmp_path / f"stopped-{k}"
        if earlier:
            shutil.copytree(tmp_path / "earlier", out)
        try:
            with stop_before(k) as done:
                run(out, earlier, False)
            boundaries = len(done)
            break
        except Stopped:
            pass
        if (out / "manifest.json").is_file():  # looks finished: then its files are those of the job it names
            assert digest(out, OUTPUTS[command]) == outputs_of_job[job(out)], k
        run(out, earlier, False)  # the same command again
        assert digest(out, OUTPUTS[command]) == expected, k
        assert not (out / ".shards").exists(), k
        shutil.rmtree(out)
    assert boundaries is not None and boundaries >= 6, boundaries  # shards, outputs, manifest, cleanup: all tried


def test_scores_do_not_depend_on_the_shard_size(ws, tmp_path):
    """The same scoring cut into other shards (a resumed job must never depend on how the work was cut)."""
    results = [score(ws / "run", ws / "queries.jsonl", out=tmp_path / f"shards-{size}",
                     options=ScoreOptions(max_length=32, batch_size=2, shard_size=size, per_token=True), quiet=True)
               for size in (3, 5, 8)]
    saved = [load_file(str(tmp_path / f"shards-{size}" / "scores.safetensors")) for size in (3, 5, 8)]
    for result, tensors in zip(results[1:], saved[1:]):
        assert result.scores.abs().max() > 0
        for key in ("scores", "per_token"):
            torch.testing.assert_close(tensors[key], saved[0][key], rtol=1e-6, atol=1e-6 * saved[0][key].abs().max())
