"""The report in a real headless Chromium: no console errors, hostile texts inert and visible, index works.

Needs Debian's chromium at /usr/bin/chromium and the playwright package (.ci/install-browser.sh installs both;
playwright's own browser download is never used). Screenshots go to $WHEREFROM_ARTIFACTS (default: the test's tmp
folder); they are artefacts to look at, never committed.
"""

from __future__ import annotations

import re

import pytest
from chromium import NEEDS_BROWSER, artifacts, browser_context, open_report  # noqa: F401 - fixtures

from outputs.synthetic import BOLD, HOSTILE_ID, SCRIPT, synthetic_result
from wherefrom.outputs.report import write_report

pytestmark = NEEDS_BROWSER
sync_api = pytest.importorskip("playwright.sync_api", reason="needs the playwright package: run .ci/install-browser.sh",
                              exc_type=ImportError)


def test_hostile_texts_show_as_text_and_run_nothing(browser_context, tmp_path, artifacts):  # noqa: F811
    path = write_report(synthetic_result(), tmp_path / "hostile.html", n_bootstrap=0)
    page, problems = open_report(browser_context, path)
    first_card = page.locator("#query-0 li.seq").first
    sync_api.expect(first_card.locator(".tokens")).to_contain_text(SCRIPT)
    sync_api.expect(first_card.locator(".tokens")).to_contain_text(BOLD)
    sync_api.expect(first_card.locator(".rid")).to_have_text(HOSTILE_ID)
    assert page.evaluate("document.scripts.length") == 1
    assert page.evaluate("document.querySelectorAll('b, i, [onerror]').length") == 0
    assert page.title() == "wherefrom report: synthetic <model>"
    page.screenshot(path=str(artifacts / "report-hostile.png"), full_page=True)
    page.close()
    assert problems == []


def test_tiny_run_report_renders_with_its_sections_and_top_sequences(browser_context, tiny_run, tmp_path, artifacts):  # noqa: F811
    path = write_report(tiny_run, tmp_path / "tiny.html", top_k=5, n_bootstrap=20)
    page, problems = open_report(browser_context, path)
    for heading in ("Overview", "Cross-query comparison"):
        sync_api.expect(page.get_by_role("heading", name=heading, exact=True)).to_be_visible()
    for query in tiny_run.queries:
        section = page.locator(f"#query-{query.index}")
        sync_api.expect(section.locator(".qa")).to_have_text(query.prompt + query.completion)
        expected = [tiny_run.sequences[row].record_id for row in tiny_run.top(query.index, 5)]
        sync_api.expect(section.locator("li.seq .rid")).to_have_text(expected)
        sync_api.expect(section.locator("img.plot").first).to_be_visible()
        assert all(img["complete"] and img["width"] > 0 for img in section.locator("img.plot").evaluate_all(
            "images => images.map(i => ({complete: i.complete, width: i.naturalWidth}))"))
    page.screenshot(path=str(artifacts / "report-tiny-run.png"), full_page=True)
    page.close()
    assert problems == []


def test_query_index_stays_on_screen_and_follows_the_reader(browser_context, tiny_run, tmp_path, artifacts):  # noqa: F811
    path = write_report(tiny_run, tmp_path / "tiny.html", top_k=5, n_bootstrap=0)
    page, problems = open_report(browser_context, path)
    page.locator("nav.index a[href='#query-1']").click()
    sync_api.expect(page.locator("nav.index a[href='#query-1']")).to_have_class(re.compile(r"\bactive\b"))
    assert page.evaluate("window.scrollY") > 0
    box = page.locator("nav.index").bounding_box()
    assert box is not None and box["y"] == 0 and box["height"] > 0  # still at the top of the viewport
    page.screenshot(path=str(artifacts / "report-tiny-run-query-1.png"))
    page.close()
    assert problems == []
