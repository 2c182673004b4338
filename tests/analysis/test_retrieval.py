"""`wherefrom evaluate`: recall@k and MRR on hand-made rankings, and the command end to end with BM25."""

from __future__ import annotations

import hashlib
import json

import pytest
import torch
from tiny import write_jsonl, write_workspace
from typer.testing import CliRunner

from wherefrom.analysis.retrieval import Ranking, Truth, evaluate, record_order
from wherefrom.api import fit, score
from wherefrom.cli.main import app
from wherefrom.options import FitOptions, ScoreOptions
from wherefrom.scoring.results import ScoreResult


def test_recall_and_mrr_on_hand_made_rankings():
    ranking = Ranking("hand", {"q1": ["a", "b", "c", "d", "e"], "q2": ["x", "y"], "q3": ["m", "n"],
                               "q4": ["r1", "r2", "r3"]})
    truths = [Truth("q1", ("c", "e", "z"), "g"), Truth("q2", ("x",), "g"), Truth("q3", ("p",), "h"),
              Truth("q4", ("r1", "r2", "r3"), "h")]
    result = evaluate(ranking, truths, [1, 2, 3, 5])
    q1, q2, q3, q4 = result.queries
    assert q1.ranks == {"c": 3, "e": 5, "z": None}
    # q1: 3 records to find; c at 3, e at 5, z never ranked.
    assert q1.recall == {1: 0.0, 2: 0.0, 3: pytest.approx(1 / 3), 5: pytest.approx(2 / 3)}
    assert q1.reciprocal_rank == pytest.approx(1 / 3)
    assert q2.recall == {1: 1.0, 2: 1.0, 3: 1.0, 5: 1.0} and q2.reciprocal_rank == 1.0
    assert q3.recall == {1: 0.0, 2: 0.0, 3: 0.0, 5: 0.0} and q3.reciprocal_rank == 0.0 and q3.ranks == {"p": None}
    # q4: recall@2 divides by min(2, 3) = 2, so finding 2 of 3 in the top 2 is 1.0.
    assert q4.recall == {1: 1.0, 2: 1.0, 3: 1.0, 5: 1.0}
    assert result.recall == {1: pytest.approx((0 + 1 + 0 + 1) / 4), 2: pytest.approx(2 / 4),
                             3: pytest.approx((1 / 3 + 1 + 0 + 1) / 4), 5: pytest.approx((2 / 3 + 1 + 0 + 1) / 4)}
    assert result.mrr == pytest.approx((1 / 3 + 1 + 0 + 1) / 4)
    group = result.group("h")
    assert group.recall[3] == pytest.approx(0.5) and group.mrr == pytest.approx(0.5)
    with pytest.raises(ValueError, match="'q9'"):
        evaluate(ranking, [Truth("q9", ("a",))], [1])


def test_a_record_cut_into_several_sequences_ranks_once_at_its_best():
    # Columns 0 and 2 are both record A; ties go to the lower column.
    assert record_order(torch.tensor([0.1, 0.9, 0.5, 0.9]), ["A", "B", "A", "C"]) == ["B", "C", "A"]


@pytest.fixture(scope="module")
def scored(tmp_path_factory):
    root = tmp_path_factory.mktemp("evaluate")
    write_workspace(root, queries=[{"id": "capital", "prompt": "rome is the capital of", "completion": " italy."},
                                   {"id": "cat", "prompt": "the cat", "completion": " sat on the mat."}])
    fit(root / "model", root / "corpus.jsonl", root / "run", FitOptions(batch_size=4, max_length=32), quiet=True)
    score(root / "run", root / "queries.jsonl", out=root / "exact", quiet=True,
          options=ScoreOptions(max_length=32, batch_size=4, normalize=True))
    write_jsonl(root / "truth.jsonl", [{"query_id": "capital", "record_ids": ["doc-2", "doc-6"], "group": "fact"},
                                       {"query_id": "cat", "record_ids": ["doc-0"], "group": "other"}])
    return root


def test_evaluate_command_ranks_every_method_and_bm25(scored, tmp_path):
    result = CliRunner().invoke(app, ["evaluate", "--scores", str(scored / "exact"), "--truth",
                                      str(scored / "truth.jsonl"), "--k", "1", "--k", "3", "--json",
                                      str(tmp_path / "eval.json")])
    assert result.exit_code == 0, result.output
    assert "recall@3" in result.output and "BM25" in result.output and "per group" in result.output
    methods = {m["method"]: m for m in json.loads((tmp_path / "eval.json").read_text())["methods"]}
    assert list(methods) == ["BM25", "exact", "exact cosine"]
    saved = ScoreResult.load(scored / "exact")  # the ranks are recomputed from the saved matrices
    for name, matrix in (("exact", saved.scores), ("exact cosine", saved.cosine)):
        for query in methods[name]["queries"]:
            row = {"capital": 0, "cat": 1}[query["query_id"]]
            for record, rank in query["ranks"].items():
                column = int(record.removeprefix("doc-"))
                assert rank == 1 + int((matrix[row] > matrix[row, column]).sum()), (name, record)
            best = min(query["ranks"].values())
            assert query["reciprocal_rank"] == pytest.approx(1 / best)
    # BM25 on the model's (character) tokens: "the cat sat on the mat." shares every token of its query.
    assert methods["BM25"]["queries"][1]["ranks"] == {"doc-0": 1}
    assert set(methods["BM25"]["groups"]) == {"fact", "other"}


@pytest.mark.parametrize(("truth_rows", "message"), [
    ([{"query_id": "capital", "record_ids": ["doc-99"]}], "record 'doc-99'"),
    ([{"query_id": "nowhere", "record_ids": ["doc-1"]}], "'nowhere'"),
    ([{"query_id": "capital", "record_ids": []}], "at least one record id"),
    ([{"query_id": "cat", "record_ids": ["doc-0"]}, {"query_id": "cat", "record_ids": ["doc-1"]}], "more than once"),
])
def test_bad_truth_is_refused_in_one_line(scored, tmp_path, truth_rows, message):
    write_jsonl(tmp_path / "truth.jsonl", truth_rows)
    result = CliRunner().invoke(app, ["evaluate", "--scores", str(scored / "exact"), "--truth",
                                      str(tmp_path / "truth.jsonl")])
    assert result.exit_code == 2 and message in result.output and "Traceback" not in result.output, result.output


def test_missing_folders_and_files_are_refused_in_one_line(scored, tmp_path):
    runner = CliRunner()
    for args, message in [(["--scores", str(tmp_path), "--truth", str(scored / "truth.jsonl")], "scores.safetensors"),
                          (["--scores", str(scored / "exact"), "--truth", str(tmp_path / "none.jsonl")], "not found"),
                          (["--scores", str(scored / "exact"), "--truth", str(tmp_path)], "is a folder")]:
        result = runner.invoke(app, ["evaluate", *args])
        assert result.exit_code == 2 and message in result.output, result.output


def _digests(folder) -> dict[str, str]:
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_json_never_replaces_a_file_evaluate_did_not_write(scored, tmp_path):
    runner = CliRunner()
    args = ["evaluate", "--scores", str(scored / "exact"), "--truth", str(scored / "truth.jsonl"), "--k", "1"]
    before = _digests(scored)
    for target, message in [(scored / "exact" / "manifest.json", "not written by wherefrom"),
                            (scored / "truth.jsonl", "not written by wherefrom"),
                            (scored / "exact", "is a folder")]:
        result = runner.invoke(app, [*args, "--json", str(target)])
        assert result.exit_code == 2 and message in result.output and "Traceback" not in result.output, result.output
        assert len(result.output.strip().splitlines()) == 1, result.output
    assert _digests(scored) == before
    # An earlier evaluation is replaced: it carries the generator key.
    for _ in range(2):
        assert runner.invoke(app, [*args, "--json", str(tmp_path / "eval.json")]).exit_code == 0
    assert json.loads((tmp_path / "eval.json").read_text())["generator"] == "wherefrom evaluate"
