"""The comparison report in a real headless Chromium: no console errors, every plot drawn, nothing fetched.

Needs Debian's chromium at /usr/bin/chromium and the playwright package (.ci/install-browser.sh). Screenshots go
to $WHEREFROM_ARTIFACTS (default: the test's tmp folder).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

import wherefrom
from scaling.folders import write_corpus, write_folder
from wherefrom.outputs.scale_report import write_scale_report

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


def test_scale_section_renders_with_its_plots(browser_context, tmp_path):
    corpus = write_corpus(tmp_path)
    folders = [write_folder(tmp_path, "small", corpus), write_folder(tmp_path, "large", corpus)]
    (tmp_path / "truth.jsonl").write_text(json.dumps({"query_id": "sum", "record_ids": ["r3"]}) + "\n")
    (tmp_path / "pairs.txt").write_text("capital-en capital-fr en fr\n")
    comparison = wherefrom.compare(folders, k=2, truth=tmp_path / "truth.jsonl", pairs=tmp_path / "pairs.txt")
    path = write_scale_report(comparison, tmp_path / "compare.html")
    page = browser_context.new_page()
    problems: list[str] = []
    requests: list[str] = []
    page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type in ("error", "warning")
            else None)
    page.on("pageerror", lambda error: problems.append(f"page error: {error}"))
    page.on("request", lambda request: requests.append(request.url))
    page.goto(path.as_uri(), wait_until="load")
    section = page.locator("section#scale")
    sync_api.expect(section.locator("h2")).to_have_text("Influence across models")
    plots = section.locator("img.plot")
    sync_api.expect(plots).to_have_count(12)  # 10 measures + agreement (Spearman, overlap) with the last model
    drawn = page.evaluate("[...document.querySelectorAll('#scale img.plot')].map(i => i.complete && i.naturalWidth)")
    assert all(width and width > 100 for width in drawn), drawn
    sync_api.expect(section.locator("table.scale-measures")).to_contain_text("recall@2")
    sync_api.expect(section.locator("table.scale-agreement")).to_contain_text("small ~ large")
    assert page.evaluate("document.scripts.length") == 0
    assert [url for url in requests if not url.startswith(("file:", "data:"))] == []  # one self-contained file
    folder = Path(os.environ.get("WHEREFROM_ARTIFACTS") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(folder / "compare-report.png"), full_page=True)
    page.close()
    assert problems == []
