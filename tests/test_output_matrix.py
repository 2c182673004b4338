"""Every score folder any command writes is read by every command that takes one: report, analyse, evaluate and
units, through the command line, on folders of all scored sequences and of a subset of them (BM25 candidates, an
index's re-scored top: their corpus rows skip the rest), normalised or not, from the index alone, split per unit,
and a unit ranking saved by `units --save`."""

from __future__ import annotations

import json

import pytest
import torch
from tiny import TEXTS, tiny_llama, write_jsonl, write_workspace
from typer.testing import CliRunner

from wherefrom.cli.main import app
from wherefrom.scoring.results import ScoreResult

runner = CliRunner()
SCORE = ("score", "--run", "{run}", "--queries", "{queries}", "-q")
SCORE_INDEX = ("score", "--index", "{index}", "--queries", "{queries}", "-q")
PRODUCERS = {
    "all": (*SCORE, "--per-token", "--per-layer"),
    "normalized": (*SCORE, "--normalize"),
    "candidates": (*SCORE, "--candidates", "2", "--per-token"),
    "index-rescored": (*SCORE_INDEX, "--rescore", "2", "--per-token"),
    "index-rescored-normalized": (*SCORE_INDEX, "--rescore", "2", "--normalize"),
    "index-only-normalized": (*SCORE_INDEX, "--rescore", "0", "--normalize"),
    "per-unit": (*SCORE, "--per-unit", "3", "--per-token"),
}
CONSUMERS = {
    "report": ("report", "{folder}", "-o", "{tmp}/report.html", "--bootstraps", "0"),
    "analyse": ("analyse", "{folder}", "--bootstraps", "0"),
    "evaluate": ("evaluate", "--scores", "{folder}", "--truth", "{truth}"),
    "units": ("units", "{folder}", "--unit", "0:1", "--among", "2"),
}


def invoke(*args: object):
    result = runner.invoke(app, [str(a) for a in args], env={"COLUMNS": "200"})
    assert result.exit_code == 0, (args, result.output)
    return result


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """A fitted run, an index, and one score folder of each producer (and a saved unit ranking)."""
    root = write_workspace(tmp_path_factory.mktemp("matrix"), tiny_llama())
    invoke("fit", "--model", root / "model", "--corpus", root / "corpus.jsonl", "--out", root / "run",
           "--max-length", 32, "-q")
    invoke("index", "--run", root / "run", "--out", root / "index", "--budget", "full", "-q")
    write_jsonl(root / "truth.jsonl", [{"query_id": "capital", "record_ids": ["doc-2", "doc-6"]},
                                       {"query_id": "cat", "record_ids": ["doc-0"]}])
    made = {}
    for name, args in PRODUCERS.items():
        filled = [a.format(run=root / "run", index=root / "index", queries=root / "queries.jsonl") for a in args]
        invoke(*filled, "--out", root / name)
        made[name] = root / name
    invoke("units", root / "all", "--unit", "0:1", "--save", root / "unit-ranking", "-q")
    made["unit-ranking"] = root / "unit-ranking"
    return root, made


def test_subsets_keep_their_corpus_rows(folders):
    """The folders the matrix is about: columns that skip corpus rows, as the re-scored top of an index does."""
    _, made = folders
    for name in ("candidates", "index-rescored", "index-rescored-normalized"):
        rows = [s.row for s in ScoreResult.load(made[name]).sequences]
        assert rows == sorted(set(rows)) and len(rows) < len(TEXTS), (name, rows)
        if name == "candidates":  # BM25's top 2 of each query: the texts sharing its words, not the first rows
            assert rows != list(range(len(rows))), rows


@pytest.mark.parametrize("consumer", CONSUMERS)
@pytest.mark.parametrize("producer", [*PRODUCERS, "unit-ranking"])
def test_every_score_folder_is_read_by_every_command_that_takes_one(folders, tmp_path, producer, consumer):
    root, made = folders
    args = [a.format(folder=made[producer], tmp=tmp_path, truth=root / "truth.jsonl") for a in CONSUMERS[consumer]]
    result = invoke(*args)
    if consumer == "evaluate":
        assert "recall" in result.output.lower()
    if consumer == "report":
        page = (tmp_path / "report.html").read_text()
        assert "paris is the capital of" in page


def test_normalized_folders_rank_by_the_cosine_they_record(folders):
    _, made = folders
    for name in ("normalized", "index-rescored-normalized", "index-only-normalized"):
        result = ScoreResult.load(made[name])
        manifest = json.loads((made[name] / "manifest.json").read_text())
        assert manifest["ranked_by"] == "cosine" and result.cosine is not None
        best = torch.argmax(result.cosine[0]).item()
        assert result.top(0, 1) == [best]
