"""The "which neurons carry it" panel: its content from a real run, and in a real headless Chromium (bars render, a
click lists the sequences acting through the unit with token heatmaps, corpus text stays inert)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from chromium import CHROMIUM, browser_context, open_report  # noqa: F401 - the fixture
from tiny import TEXTS, save_model_dir, tiny_llama, write_jsonl

import wherefrom
from outputs.page import data_blocks, parse
from outputs.synthetic import BOLD, HOSTILE_ID, SCRIPT, synthetic_result
from wherefrom.outputs.report import write_report
from wherefrom.outputs.unit_panel import unit_panel
from wherefrom.scoring.results import ScoreResult
from wherefrom.scoring.unit_results import UnitInfluence


@pytest.fixture(scope="module")
def unit_run(tmp_path_factory) -> ScoreResult:
    work = tmp_path_factory.mktemp("unit-run")
    save_model_dir(tiny_llama(), work / "model")
    write_jsonl(work / "corpus.jsonl", [{"id": f"rec-{i}", "text": t} for i, t in enumerate(TEXTS)])
    write_jsonl(work / "queries.jsonl", [{"id": "capital", "prompt": "paris is the capital of", "completion": " france."}])
    wherefrom.fit(work / "model", work / "corpus.jsonl", work / "run",
                  wherefrom.FitOptions(batch_size=8, modules="all-linear"), quiet=True)
    options = wherefrom.ScoreOptions(batch_size=8, per_token=True, per_unit=6, top_k=7)
    wherefrom.score(work / "run", work / "queries.jsonl", out=work / "scores", options=options, quiet=True)
    return ScoreResult.load(work / "scores")


def with_hostile_units(result: ScoreResult) -> ScoreResult:
    """The synthetic result (hostile record 0 on top of query 0) with a unit split of its top sequences."""
    n_queries, k, m = len(result.queries), 3, 4
    rows = torch.stack([torch.topk(result.scores[q], m).indices for q in range(n_queries)])
    width = max(len(s.tokens) for s in result.sequences)
    tokens = torch.zeros(n_queries, m, k, width)
    tokens[:, :, :, 1] = torch.tensor([0.5, -0.25, 0.1])
    result.units = UnitInfluence(
        names=["model.layers.0.mlp:3", "model.layers.1.self_attn:head0", "model.layers.1.mlp:<b>7</b>"],
        view="nodes", n_units=100, ids=torch.tensor([[0, 1, 2]] * n_queries),
        influence=torch.tensor([[2.0, -1.0, 0.5]] * n_queries), positive=torch.full((n_queries,), 4.0),
        concentration=torch.tensor([2, -1, 3]), rows=rows, split=tokens.sum(-1), tokens=tokens)
    return result


def test_the_panel_lists_units_by_share_and_sequences_by_influence_through_the_unit(unit_run):
    units = unit_run.units
    panel = unit_panel(unit_run, 0, "query-0")
    assert [b.name for b in panel.bars] == [units.names[i] for i in units.ids[0].tolist()]
    assert [b.share for b in panel.bars] == pytest.approx((units.influence[0] / units.positive[0]).tolist())
    assert max(b.width for b in panel.bars) == pytest.approx(100.0)
    assert panel.concentration == int(units.concentration[0]) and panel.n_units == units.n_units
    for k, bar in enumerate(panel.bars):
        values = [s.value for s in bar.sequences]
        assert values == sorted(values, reverse=True)
        assert sorted(s.row for s in bar.sequences) == sorted(units.rows[0].tolist())
        mapped = set(units.rows[0, :5].tolist())  # the query's best 5 sequences get token maps (a second pass)
        assert {s.row for s in bar.sequences if s.tokens is not None} == mapped
        for s in bar.sequences:  # the heatmap of a sequence through a unit sums to its influence through it
            if s.tokens is not None:
                assert sum(t.value for t in s.tokens) == pytest.approx(s.value, rel=1e-4, abs=1e-5)


def test_without_per_unit_the_panel_says_how_to_get_it(tmp_path):
    page = parse(write_report(synthetic_result(n_sequences=40), tmp_path / "r.html", n_bootstrap=0).read_text())
    assert "score with --per-unit K" in page.by_id("query-0").text


@pytest.mark.browser
@pytest.mark.skipif(not CHROMIUM.exists(), reason="needs /usr/bin/chromium")
def test_a_click_on_a_unit_lists_its_sequences_with_heatmaps_and_text_stays_inert(browser_context, tmp_path: Path):  # noqa: F811
    sync_api = pytest.importorskip("playwright.sync_api", exc_type=ImportError)
    path = write_report(with_hostile_units(synthetic_result(n_sequences=40)), tmp_path / "units.html", n_bootstrap=0)
    page, problems = open_report(browser_context, path)
    panel = page.locator("#query-0 .unit-panel")
    bars = panel.locator("button.unit-bar")
    sync_api.expect(bars).to_have_count(3)
    sync_api.expect(bars.nth(2).locator(".unit-name")).to_have_text("model.layers.1.mlp:<b>7</b>")
    sync_api.expect(page.locator("#query-0 .concentration")).to_have_text("2 of 100 units carry half of the influence.")
    sync_api.expect(page.locator("#query-1 .concentration")).to_contain_text("their parts cancel")
    detail = page.locator("#query-0-unit-1")
    sync_api.expect(detail).to_be_hidden()
    bars.nth(1).click()
    sync_api.expect(detail).to_be_visible()
    sync_api.expect(bars.nth(1)).to_have_attribute("aria-expanded", "true")
    sync_api.expect(detail.locator("li.unit-seq")).to_have_count(4)
    hostile = detail.locator("li.unit-seq", has_text=HOSTILE_ID)
    sync_api.expect(hostile.locator(".tokens")).to_contain_text(SCRIPT)
    sync_api.expect(hostile.locator(".tokens")).to_contain_text(BOLD)
    sync_api.expect(hostile.locator(".tokens span[style]")).to_have_count(1)  # the one token with a value
    bars.nth(0).click()  # one unit open at a time
    sync_api.expect(detail).to_be_hidden()
    sync_api.expect(page.locator("#query-0-unit-0")).to_be_visible()
    assert page.evaluate("document.querySelectorAll('script:not([type=\"application/json\"])').length") == 1
    assert page.evaluate("document.querySelectorAll('b, i, [onerror]').length") == 0
    page.close()
    assert problems == []


def test_the_page_holds_each_units_sequences_values_and_texts(tmp_path):
    """The data the page draws a unit's sequences from: every sequence of every bar, its influence through the unit,
    its token values, its text once (the run's, with the hostile record's HTML as a string)."""
    result = with_hostile_units(synthetic_result(n_sequences=40))
    page = parse(write_report(result, tmp_path / "units.html", n_bootstrap=0).read_text(encoding="utf-8"))
    blocks = data_blocks(page)
    assert len(blocks) == len(result.queries)
    units = result.units
    for query, data in enumerate(blocks):
        rows = units.rows[query].tolist()
        for k, shown in enumerate(data["units"]):
            through = units.split[query, :, k].tolist()
            expected = sorted(range(len(rows)), key=lambda m: -through[m])
            assert [entry[0] for entry in shown] == [rows[m] for m in expected]
            for entry, m in zip(shown, expected, strict=True):
                assert float(entry[1]) == pytest.approx(through[m], rel=1e-3) and entry[2] == int(through[m] > 0)
                pieces = result.sequences[rows[m]].tokens
                values = units.tokens[query, m, k, :len(pieces)].tolist()
                assert entry[3] == pytest.approx(values, rel=1e-5)
                largest = float(units.tokens[query, :, k].abs().max())
                assert entry[4] == [None if v == 0 else round(850 * min(abs(v) / largest, 1)) for v in values]
                assert data["sequences"][str(rows[m])]["pieces"] == pieces
        assert data["sequences"][str(rows[0])]["id"] == result.sequences[rows[0]].record_id
    assert HOSTILE_ID in [s["id"] for s in blocks[0]["sequences"].values()]
