"""`score --per-unit` and `wherefrom units` through the command line, on a tiny model tracking all linear layers."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from tiny import write_workspace
from typer.testing import CliRunner

from wherefrom.cli.main import app
from wherefrom.scoring.results import ScoreResult

runner = CliRunner()


def invoke(*args: object):
    return runner.invoke(app, [str(a) for a in args])


def hashes(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def scored(tmp_path_factory):
    root = tmp_path_factory.mktemp("units")
    write_workspace(root)
    assert invoke("fit", "--model", root / "model", "--corpus", root / "corpus.jsonl", "--out", root / "run",
                  "--modules", "all-linear", "--batch-size", 3, "--max-length", 32, "-q").exit_code == 0
    result = invoke("score", "--run", root / "run", "--queries", root / "queries.jsonl", "--out", root / "out",
                    "--per-unit", 4, "--per-token", "--top-k", 3)
    assert result.exit_code == 0, result.output
    assert "which units carry it" in result.output and "units carry half" in result.output
    return root


def test_per_unit_is_saved_in_scores_and_results(scored):
    tensors = load_file(str(scored / "out" / "scores.safetensors"))
    manifest = json.loads((scored / "out" / "manifest.json").read_text())
    assert tensors["unit_ids"].shape == (2, 4) and tensors["unit_split"].shape == (2, 3, 4)
    assert tensors["unit_tokens"].shape[:3] == (2, 3, 4)
    lines = [json.loads(line) for line in (scored / "out" / "results.jsonl").read_text().splitlines()]
    for q, line in enumerate(lines):
        names = [u["unit"] for u in line["units"]]
        assert names == [manifest["unit_names"][i] for i in tensors["unit_ids"][q].tolist()]
        for u in line["units"]:
            assert u["share"] == pytest.approx(u["influence"] / line["units_positive_influence"], rel=1e-5)
        assert 1 <= line["unit_concentration"] <= manifest["n_units"] == line["units_total"]
        for entry in line["top"]:
            assert list(entry["per_unit"]) == names
            assert entry["tokens"]  # the token pieces the heatmaps need


def test_units_scan_agrees_with_the_per_unit_split_and_leaves_the_score_folder_alone(scored):
    """Two independent paths: the split of the full contraction (score --per-unit) and the scan of the restricted
    layers (units) give the same influence through a unit."""
    before = hashes(scored / "out")
    line = json.loads((scored / "out" / "results.jsonl").read_text().splitlines()[0])
    unit = line["units"][0]["unit"]
    result = invoke("units", scored / "out", "--unit", unit, "--save", scored / "unit-out", "--top-k", 2)
    assert result.exit_code == 0, result.output
    assert f"influence through {unit} only" in result.output
    scan = ScoreResult.load(scored / "unit-out")
    assert scan.metadata["unit"] == unit and scan.per_token is not None
    for entry in line["top"]:
        assert float(scan.scores[0, entry["row"]]) == pytest.approx(entry["per_unit"][unit], rel=1e-4, abs=1e-5)
        torch.testing.assert_close(scan.token_scores(0, entry["row"]).sum(), scan.scores[0, entry["row"]],
                                   rtol=1e-4, atol=1e-5)
    assert hashes(scored / "out") == before


def test_units_among_scans_only_the_top_sequences(scored):
    result = invoke("units", scored / "out", "--unit", "0:head1", "--among", 2, "--save", scored / "among", "-q")
    assert result.exit_code == 0, result.output
    assert len(ScoreResult.load(scored / "among").sequences) <= 4


@pytest.mark.parametrize(("args", "needle"), [
    (["units", "{out}", "--unit", "7:3"], "names no unit"),
    (["units", "{out}", "--unit", "0:3", "--among", "0"], "--among"),
    (["units", "{root}", "--unit", "0:3"], "holds no scores"),
    (["score", "--run", "{root}/run", "--queries", "{root}/queries.jsonl", "--out", "{out}", "--per-unit", "0"],
     "--per-unit"),
    (["score", "--run", "{root}/run", "--queries", "{root}/queries.jsonl", "--out", "{out}", "--per-unit", "2",
      "--unit-view", "layers"], "--unit-view"),
])
def test_bad_unit_input_is_one_line_and_changes_nothing(scored, args, needle):
    before = hashes(scored / "out")
    result = invoke(*[a.format(out=scored / "out", root=scored) for a in args])
    assert result.exit_code == 2, result.output
    assert needle in result.output and "Traceback" not in result.output
    assert hashes(scored / "out") == before
