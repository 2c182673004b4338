"""`wherefrom compare` end to end on hand-made folders: the table, JSON and report; refusals in one line."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from scaling.folders import QUERIES, write_corpus, write_folder
from wherefrom.cli.main import app


@pytest.fixture
def workspace(tmp_path):
    corpus = write_corpus(tmp_path)
    write_folder(tmp_path, "small", corpus)
    write_folder(tmp_path, "large", corpus)
    return tmp_path


def run(*args: str):
    return CliRunner().invoke(app, ["compare", *args], terminal_width=200)


def test_table_json_and_report(workspace):
    (workspace / "pairs.jsonl").write_text(json.dumps({"query_ids": ["capital-en", "capital-fr"],
                                                       "languages": ["en", "fr"]}) + "\n")
    result = run(str(workspace / "small"), str(workspace / "large"), "--top-k", "2", "--pairs",
                 str(workspace / "pairs.jsonl"), "--json", str(workspace / "c.json"), "--html", str(workspace / "c.html"))
    assert result.exit_code == 0, result.output
    assert "BM25 of the top-2" in result.output and "small ~ large" in result.output and "4,000 params" in result.output
    written = json.loads((workspace / "c.json").read_text())
    assert written["folders"][1]["measures"]["other_language_share"]["mean"] == pytest.approx(6.1 / 9.1, rel=1e-6)
    page = (workspace / "c.html").read_text()
    # 9 measures (no --truth: no recall) + 2 agreements
    assert 'id="scale"' in page and page.count("data:image/svg+xml,") == 11  # the report's compact SVGs


@pytest.mark.parametrize("case, message", [
    ("corpus", "score different corpora"),
    ("queries", "score different query sets"),
    ("pairs", "query 'capital-de' is not among the scored queries"),
    ("one", "compare needs at least two score folders"),
    ("languages", "has no record with a \"language\" field"),
    ("moved corpus", "is not a .jsonl file here"),
])
def test_refusals_in_one_line(workspace, case, message):
    folders = [str(workspace / "small"), str(workspace / "large")]
    extra: list[str] = []
    if case == "corpus":
        other = workspace / "other"
        other.mkdir()
        ids = ["r0", "r1", "r2", "r3", "r4", "r9"]
        folders[1] = str(write_folder(other, "large", write_corpus(other, ids), ids=ids))
    elif case == "queries":
        folders[1] = str(write_folder(workspace / "fewer", "large", workspace / "corpus.jsonl", queries=QUERIES[:2]))
    elif case == "pairs":
        (workspace / "pairs.txt").write_text("capital-en capital-fr\ncapital-en capital-de en de\n")
        extra = ["--pairs", str(workspace / "pairs.txt")]
    elif case == "one":
        folders = folders[:1]
    elif case == "moved corpus":
        (workspace / "corpus.jsonl").unlink()
        (workspace / "pairs.txt").write_text("capital-en capital-fr en fr\n")
        extra = ["--pairs", str(workspace / "pairs.txt")]
    else:
        (workspace / "plain.jsonl").write_text(json.dumps({"id": "r0", "text": "no language here"}) + "\n")
        (workspace / "pairs.txt").write_text("capital-en capital-fr en fr\n")
        extra = ["--pairs", str(workspace / "pairs.txt"), "--languages", str(workspace / "plain.jsonl")]
    result = run(*folders, *extra)
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1, result.output
