"""The report in a real headless Chromium: no console errors, hostile texts inert and visible, index works.

Needs Debian's chromium at /usr/bin/chromium and the playwright package (.ci/install-browser.sh installs both;
playwright's own browser download is never used). Screenshots go to $WHEREFROM_ARTIFACTS (default: the test's tmp
folder); they are artefacts to look at, never committed.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from outputs.synthetic import BOLD, HOSTILE_ID, SCRIPT, synthetic_result
from wherefrom.outputs import write_report

CHROMIUM = Path("/usr/bin/chromium")
pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="needs /usr/bin/chromium: run .ci/install-browser.sh"),
]
sync_api = pytest.importorskip("playwright.sync_api", reason="needs the playwright package: run .ci/install-browser.sh")

ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")
def browser_context(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    with sync_api.sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path_factory.mktemp("chromium-profile")), executable_path=str(CHROMIUM), headless=True,
            args=ARGS, viewport={"width": 1400, "height": 900}, offline=True,
        )
        yield context
        context.close()


@pytest.fixture
def artifacts(tmp_path: Path) -> Path:
    folder = Path(os.environ.get("WHEREFROM_ARTIFACTS") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def watched_page(context, address: str):
    """The page loaded from ``address`` and the problems it reports: console errors and warnings, uncaught errors,
    dialogs."""
    page = context.new_page()
    problems: list[str] = []
    page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type in ("error", "warning")
            else None)
    page.on("pageerror", lambda error: problems.append(f"page error: {error}"))
    page.on("dialog", lambda dialog: (problems.append(f"dialog: {dialog.message}"), dialog.dismiss()))
    page.goto(address, wait_until="load")
    return page, problems


def open_report(context, path: Path):
    """The loaded report and the problems it reported."""
    return watched_page(context, path.as_uri())


def test_hostile_texts_show_as_text_and_run_nothing(browser_context, tmp_path, artifacts):
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


def test_tiny_run_report_renders_with_its_sections_and_top_sequences(browser_context, tiny_run, tmp_path, artifacts):
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


def test_query_index_stays_on_screen_and_follows_the_reader(browser_context, tiny_run, tmp_path, artifacts):
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
