"""The comparison as a section of a score folder's report: `wherefrom report OUT --compare compare.json`.

The comparison JSON is read back whole (every interval and per-query value, the pairs, the findings), the report
holds the same section as the standalone page, and bad input is refused in one line before anything is written.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from typer.testing import CliRunner

import wherefrom
from scaling.folders import QUERIES, write_corpus, write_folder
from wherefrom.cli.main import app
from wherefrom.scaling.stored import read_comparison

FINDINGS = ["Both seeds agree.", "Layers move up."]


@pytest.fixture
def workspace(tmp_path):
    corpus = write_corpus(tmp_path)
    folders = [write_folder(tmp_path, "small", corpus), write_folder(tmp_path, "large", corpus)]
    (tmp_path / "truth.jsonl").write_text(json.dumps({"query_id": "sum", "record_ids": ["r3"]}) + "\n")
    (tmp_path / "pairs.txt").write_text("capital-en capital-fr en fr\n")
    comparison = wherefrom.compare(folders, k=2, truth=tmp_path / "truth.jsonl", pairs=tmp_path / "pairs.txt")
    (tmp_path / "compare.json").write_text(comparison.to_json(FINDINGS), encoding="utf-8")
    return tmp_path, comparison


def same(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or a == b


def test_the_json_reads_back_whole(workspace):
    root, comparison = workspace
    stored, findings = read_comparison(root / "compare.json")
    assert findings == FINDINGS and stored.pairs == comparison.pairs and stored.query_ids == comparison.query_ids
    assert (stored.k, stored.axis, stored.languages) == (comparison.k, comparison.axis, comparison.languages)
    for mine, theirs in zip(stored.folders + stored.agreements, comparison.folders + comparison.agreements,
                            strict=True):
        assert mine.values.keys() == theirs.values.keys()
        for name, values in theirs.values.items():
            np.testing.assert_array_equal(mine.values[name], values)  # NaN where the measure is undefined
            a, b = mine.intervals[name], theirs.intervals[name]
            assert all(same(x, y) for x, y in ((a.mean, b.mean), (a.low, b.low), (a.high, b.high))) and a.n == b.n
    assert [(f.label, f.parameters, f.step) for f in stored.folders] == [("small", 40, None), ("large", 4000, None)]
    assert read_comparison(root / "compare.json")[0].to_json(FINDINGS) == comparison.to_json(FINDINGS)


def report(*args: str):
    return CliRunner().invoke(app, ["report", *args], terminal_width=200)


def test_report_holds_the_section(workspace):
    root, _ = workspace
    result = report(str(root / "large"), "-o", str(root / "report.html"), "--compare", str(root / "compare.json"),
                    "--bootstraps", "0")
    assert result.exit_code == 0, result.output
    page = (root / "report.html").read_text(encoding="utf-8")
    section = page[page.index('<section id="scale">'):]
    section = section[:section.index("</section>")]
    assert '<a href="#scale">' in page and all(f"<li>{f}</li>" in section for f in FINDINGS)
    # 10 measures (recall and the pair measures included) + 2 agreements with the last model, each a plot
    assert section.count('<img class="plot" src="data:image/svg+xml') == 12
    assert "recall@2" in section and "small ~ large" in section and "4,000" in section


@pytest.mark.parametrize("case, message", [
    ("missing", "not found; give the JSON file `wherefrom compare --json` wrote"),
    ("foreign", "is not a comparison written by `wherefrom compare --json`"),
    ("damaged", "is a damaged comparison"),
    ("other queries", "compares query 'sum', which this score folder did not score"),
])
def test_refusals_in_one_line(workspace, case, message):
    root, _ = workspace
    folder, comparison = root / "large", root / "compare.json"
    if case == "missing":
        comparison = root / "nowhere.json"
    elif case == "foreign":
        comparison = root / "large" / "manifest.json"
    elif case == "damaged":
        data = json.loads(comparison.read_text())
        del data["folders"][0]["measures"]["bm25_top_k"]["mean"]
        comparison.write_text(json.dumps(data))
    else:
        folder = write_folder(root / "fewer", "large", root / "corpus.jsonl", queries=QUERIES[:2])
    result = report(str(folder), "-o", str(root / "report.html"), "--compare", str(comparison))
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1, result.output
    assert not (root / "report.html").exists()
