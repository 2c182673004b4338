"""The explorer in a real headless Chromium, against a real uvicorn server: ask a question of the demo model,
wait for the answer, check the top sequence, its heatmap and the two figures drawn from the answer's numbers, that
a corpus document holding <script> shows as text and runs nothing, and that two answers can be compared side by
side. Screenshots go to
$WHEREFROM_ARTIFACTS (default: the test's tmp folder).
"""

from __future__ import annotations

import pytest
from chromium import NEEDS_BROWSER, artifacts  # noqa: F401 - the artifacts fixture

from explorer.browsing import ANSWER_TIMEOUT_MS, ask, browser, open_page, server  # noqa: F401 - fixtures
from explorer.conftest import HOSTILE_ID, SCRIPT

pytestmark = NEEDS_BROWSER
sync_api = pytest.importorskip("playwright.sync_api", reason="needs the playwright package: run .ci/install-browser.sh",
                              exc_type=ImportError)


def test_a_question_is_answered_with_ranked_heatmaps_and_plots(browser, server, explorer_demo, artifacts):  # noqa: F811
    page, problems = open_page(browser, server)
    ask(page, explorer_demo.prompt)  # no completion: the model writes its answer
    first = page.locator("#current li.seq").first
    sync_api.expect(first).to_be_visible(timeout=ANSWER_TIMEOUT_MS)
    answer = page.request.post(f"{server}/api/answer", data={"prompt": explorer_demo.prompt, "top_k": 5}).json()
    sync_api.expect(page.locator("#current .completion")).to_have_text(answer["completion"])
    sync_api.expect(page.locator("#current li.seq .rid")).to_have_text([s["record_id"] for s in answer["top"]])
    colored = first.locator(".tokens span").evaluate_all(
        "spans => spans.filter(s => s.style.backgroundColor !== '').length")
    assert colored > 0  # the token heatmap is drawn
    heatmap, tail = answer["layer_heatmap"], answer["tail"]
    drawn = page.locator("#current .layer-heatmap svg.figure")
    sync_api.expect(drawn).to_be_visible()
    sync_api.expect(drawn.locator(".cells rect")).to_have_count(len(heatmap["matrix"]) * len(heatmap["labels"]))
    sync_api.expect(drawn.locator(".cells title").first).to_contain_text(heatmap["labels"][0])
    for label in heatmap["labels"] + heatmap["block_labels"]:
        sync_api.expect(drawn.get_by_text(label, exact=True)).to_have_count(1)
    plot = page.locator("#current .tail svg.figure")
    sync_api.expect(plot).to_be_visible()
    sync_api.expect(plot.locator(".points circle")).to_have_count(len(tail["x"]))
    sync_api.expect(plot.locator("line.fit")).to_have_count(1 if tail["fit_line"] else 0)
    assert plot.evaluate("svg => svg.getBoundingClientRect().width") > 200
    page.screenshot(path=str(artifacts / "explorer-answer.png"), full_page=True)
    page.close()
    assert problems == []


def test_a_document_holding_script_is_shown_as_text(browser, server, explorer_demo, artifacts):  # noqa: F811
    page, problems = open_page(browser, server)
    ask(page, explorer_demo.prompt, explorer_demo.completion, top_k=3)
    first = page.locator("#current li.seq").first
    sync_api.expect(first.locator(".rid")).to_have_text(HOSTILE_ID, timeout=ANSWER_TIMEOUT_MS)
    first.locator(".toggle").click()  # open the sequence in full
    sync_api.expect(first.locator(".tokens")).to_contain_text(SCRIPT)
    sync_api.expect(first.locator(".tokens")).not_to_have_class("tokens clamped")
    assert page.evaluate("window.hacked") is None
    assert page.evaluate("document.querySelectorAll('main script, main b, main img:not(.plot)').length") == 0
    page.screenshot(path=str(artifacts / "explorer-hostile.png"), full_page=True)
    page.close()
    assert problems == []


def test_two_answers_side_by_side_and_a_bad_question_explained(browser, server, explorer_demo, artifacts):  # noqa: F811
    page, problems = open_page(browser, server)
    ask(page, explorer_demo.prompt, explorer_demo.completion, top_k=3)
    sync_api.expect(page.locator("#current li.seq").first).to_be_visible(timeout=ANSWER_TIMEOUT_MS)
    page.click("#current .pin")
    ask(page, explorer_demo.prompt, " Paris", top_k=3)
    sync_api.expect(page.locator("#current .completion")).to_have_text(" Paris", timeout=ANSWER_TIMEOUT_MS)
    sync_api.expect(page.locator("#compare .completion")).to_have_text(explorer_demo.completion)
    assert page.locator("#results.comparing").count() == 1
    page.set_viewport_size({"width": 1800, "height": 1100})
    page.screenshot(path=str(artifacts / "explorer-compare.png"))
    page.set_viewport_size({"width": 1400, "height": 1000})
    ask(page, "word " * 80, " x")
    sync_api.expect(page.locator("#error")).to_contain_text("over --max-length")
    page.close()
    assert [p for p in problems if "status of 400" not in p] == []
