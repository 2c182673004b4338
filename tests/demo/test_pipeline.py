"""`wherefrom demo` end to end at the reduced size: outputs, ground truth, and reuse on a repeat run."""

from __future__ import annotations

import json

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
    assert all(0.0 <= v <= 1.0 for rows in recall.values() for v in rows.values())
    assert recall["ekfac"]["training_wording"] >= recall["identity"]["training_wording"]
    html = (out / "report.html").read_text()
    assert "training_wording-" in html and "Overview" in html
    stamps = {p: p.stat().st_mtime_ns for p in (out / "run-ekfac" / "factors.safetensors",
                                                 out / "scores-ekfac" / "scores.safetensors",
                                                 out / "index" / "gradients.npy")}
    second = CliRunner().invoke(app, ["demo", "--reduced", "--out", str(out), "--bootstraps", "10", "-q"])
    assert second.exit_code == 0, second.output
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps  # nothing refitted or rescored
    assert json.loads((out / "summary.json").read_text())["recall"] == summary["recall"]
