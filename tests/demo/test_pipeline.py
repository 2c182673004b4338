"""`wherefrom demo` end to end at the reduced size: outputs, ground truth, and reuse on a repeat run."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import pytest
from safetensors.torch import load_file
from typer.testing import CliRunner

from wherefrom.cli.main import app


def test_demo_runs_end_to_end_and_a_repeat_reuses_everything(tmp_path, monkeypatch):
    monkeypatch.setenv("WHEREFROM_CACHE_DIR", str(tmp_path / "cache"))
    out = tmp_path / "demo"
    first = CliRunner().invoke(app, ["demo", "--reduced", "--out", str(out), "--bootstraps", "10", "-q"])
    assert first.exit_code == 0, first.output
    assert "Recall@10" in first.output and "BM25" in first.output and "report:" in first.output
    summary = json.loads((out / "summary.json").read_text())
    recall = {s: {r["kind"]: r["recall"] for r in rows} for s, rows in summary["recall"].items()}
    assert list(recall) == ["BM25", "ekfac", "ekfac cosine", "index", "index cosine", "identity", "identity cosine"]
    evaluation = json.loads((out / "evaluation.json").read_text())  # what `wherefrom evaluate` writes
    assert [m["method"] for m in evaluation["methods"]] == list(recall)
    truth = [json.loads(line) for line in (out / "truth.jsonl").read_text().splitlines()]
    assert {t["group"] for t in truth} == set(recall["ekfac"])
    for strategy in ("ekfac", "identity"):  # the reported recall is the one read off the written scores and the truth
        folder = out / f"scores-{strategy}"
        assert recall[strategy] == pytest.approx(_recall_from_files(folder, tmp_path / "cache"))
        assert recall[f"{strategy} cosine"] == pytest.approx(_recall_from_files(folder, tmp_path / "cache", "cosine"))
    # The planted facts are found, EK-FAC at least as often as the gradient dot product (measured 0.6 and 0.4).
    assert recall["ekfac"]["training_wording"] >= max(0.5, recall["identity"]["training_wording"])
    assert "Units carrying half of a query's influence" in summary["neurons"]
    assert "Which neurons carry the facts" in first.output
    html = (out / "report.html").read_text()
    assert "training_wording-" in html and "Overview" in html
    stamps = {p: p.stat().st_mtime_ns for p in (out / "run-ekfac" / "factors.safetensors",
                                                 out / "scores-ekfac" / "scores.safetensors",
                                                 out / "index" / "gradients.npy")}
    second = CliRunner().invoke(app, ["demo", "--reduced", "--out", str(out), "--bootstraps", "10", "-q"])
    assert second.exit_code == 0, second.output
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps  # nothing refitted or rescored
    assert json.loads((out / "summary.json").read_text())["recall"] == summary["recall"]


def _recall_from_files(scores: Path, cache: Path, ranked_by: str = "scores", k: int = 10) -> dict[str, float]:
    """Mean recall@k per query kind of the ranking by ``ranked_by`` (raw scores or cosine), from
    scores.safetensors, sequences.jsonl and the demo's ground truth."""
    demo = next(cache.glob("demo-*"))
    carriers = {fact["id"]: set(fact["carriers"]) for fact in json.loads((demo / "ground_truth.json").read_text())["facts"]}
    queries = [json.loads(line) for line in (demo / "queries.jsonl").read_text().splitlines()]
    records = [json.loads(line)["record_id"] for line in (scores / "sequences.jsonl").read_text().splitlines()]
    matrix = load_file(str(scores / "scores.safetensors"))[ranked_by]
    by_kind = defaultdict(list)
    for row, query in zip(matrix, queries, strict=True):
        relevant = carriers.get(query["fact"], set())
        if relevant:
            top = {records[i] for i in row.argsort(descending=True, stable=True)[:k].tolist()}
            by_kind[query["kind"]].append(len(top & relevant) / min(k, len(relevant)))
    return {kind: sum(values) / len(values) for kind, values in by_kind.items()}
