"""The explorer's "which neurons carry it" panel: in the JSON answer, and in a real headless Chromium against a real
server (bars render, a click lists the sequences acting through the unit with token heatmaps, the hostile
document's text stays inert)."""

from __future__ import annotations

import pytest
from chromium import CHROMIUM, artifacts  # noqa: F401 - the artifacts fixture

from explorer.browsing import ANSWER_TIMEOUT_MS, ask, browser, open_page, server  # noqa: F401 - fixtures
from explorer.conftest import HOSTILE_ID, SCRIPT


def test_the_answer_says_which_neurons_carry_it(client, explorer_demo):
    answer = client.post("/api/answer", json={"prompt": explorer_demo.prompt, "completion": explorer_demo.completion,
                                              "top_k": 4}).json()
    neurons = answer["neurons"]
    assert neurons["units"] and 1 <= neurons["concentration"] <= neurons["n_units"]
    positive = sum(s["score"] for s in answer["top"] if s["score"] > 0)  # top_k covers every re-scored sequence
    shares = [u["share"] for u in neurons["units"]]
    assert [abs(s) for s in shares] == sorted((abs(s) for s in shares), reverse=True)
    for unit in neurons["units"]:
        assert unit["share"] == pytest.approx(unit["influence"] / positive, rel=1e-3)
        assert {s["row"] for s in unit["sequences"]} == {s["row"] for s in answer["top"]}
        for sequence in unit["sequences"]:  # its heatmap through the unit sums to its influence through the unit
            assert sum(t["value"] for t in sequence["tokens"]) == pytest.approx(sequence["value"], rel=1e-3, abs=1e-4)


@pytest.mark.browser
@pytest.mark.skipif(not CHROMIUM.exists(), reason="needs /usr/bin/chromium: run .ci/install-browser.sh")
def test_a_click_on_a_neuron_lists_the_sequences_acting_through_it(browser, server, explorer_demo, artifacts):  # noqa: F811
    sync_api = pytest.importorskip("playwright.sync_api", exc_type=ImportError)
    page, problems = open_page(browser, server)
    ask(page, explorer_demo.prompt, explorer_demo.completion, top_k=3)
    bars = page.locator("#current .unit-bars button.unit-bar")
    sync_api.expect(bars.first).to_be_visible(timeout=ANSWER_TIMEOUT_MS)
    sync_api.expect(page.locator("#current .neurons-note")).to_contain_text("units carry half of the influence")
    detail = page.locator("#current .unit-detail")
    sync_api.expect(detail).to_be_hidden()
    bars.first.click()
    sync_api.expect(detail).to_be_visible()
    sync_api.expect(detail.locator("li.seq")).to_have_count(3)
    hostile = detail.locator("li.seq", has_text=HOSTILE_ID)
    sync_api.expect(hostile.locator(".tokens")).to_contain_text(SCRIPT)
    colored = hostile.locator(".tokens span").evaluate_all(
        "spans => spans.filter(s => s.style.backgroundColor !== '').length")
    assert colored > 0
    assert page.evaluate("window.hacked") is None
    assert page.evaluate("document.querySelectorAll('main script, main b, main img:not(.plot)').length") == 0
    page.screenshot(path=str(artifacts / "explorer-neurons.png"), full_page=True)
    bars.first.click()  # a second click closes it
    sync_api.expect(detail).to_be_hidden()
    page.close()
    assert problems == []
