"""The comparison section in a real headless Chromium, on its own page (`compare --html`) and inside a score
folder's report (`report --compare`): no console errors, every plot drawn, nothing fetched.

Needs Debian's chromium at /usr/bin/chromium and the playwright package (.ci/install-browser.sh). Screenshots go
to $WHEREFROM_ARTIFACTS (default: the test's tmp folder).
"""

from __future__ import annotations

import json

import pytest
from chromium import NEEDS_BROWSER, artifacts, browser_context, watched_page  # noqa: F401 - fixtures

import wherefrom
from scaling.folders import write_corpus, write_folder
from wherefrom.outputs.report import write_report
from wherefrom.outputs.scale_report import write_scale_report
from wherefrom.outputs.scale_section import read_scale_section
from wherefrom.scoring.results import ScoreResult

pytestmark = NEEDS_BROWSER
sync_api = pytest.importorskip("playwright.sync_api", reason="needs the playwright package: run .ci/install-browser.sh",
                              exc_type=ImportError)


def comparison_of(tmp_path):  # noqa: ANN001, ANN201
    corpus = write_corpus(tmp_path)
    folders = [write_folder(tmp_path, "small", corpus), write_folder(tmp_path, "large", corpus)]
    (tmp_path / "truth.jsonl").write_text(json.dumps({"query_id": "sum", "record_ids": ["r3"]}) + "\n")
    (tmp_path / "pairs.txt").write_text("capital-en capital-fr en fr\n")
    return wherefrom.compare(folders, k=2, truth=tmp_path / "truth.jsonl", pairs=tmp_path / "pairs.txt")


def check_section(context, path, screenshot, scripts: int) -> None:  # noqa: ANN001
    """The page at ``path`` shows the section with its 12 plots drawn, runs ``scripts`` scripts, fetches nothing."""
    requests: list[str] = []
    context.on("request", lambda request: requests.append(request.url))
    page, problems = watched_page(context, path.as_uri())
    section = page.locator("section#scale")
    sync_api.expect(section.locator("h2")).to_have_text("Influence across models")
    sync_api.expect(section.locator("img.plot")).to_have_count(12)  # 10 measures + agreement with the last model
    drawn = page.evaluate("[...document.querySelectorAll('#scale img.plot')].map(i => i.complete && i.naturalWidth)")
    assert all(width and width > 100 for width in drawn), drawn
    columns = page.evaluate("getComputedStyle(document.querySelector('#scale .scale-plots')).display")
    assert columns == "grid"  # the section's own styles apply
    sync_api.expect(section.locator("table.scale-measures")).to_contain_text("recall@2")
    sync_api.expect(section.locator("table.scale-agreement")).to_contain_text("small ~ large")
    assert page.evaluate("document.scripts.length") == scripts
    assert [url for url in requests if not url.startswith(("file:", "data:"))] == []  # one self-contained file
    page.screenshot(path=str(screenshot), full_page=True)
    page.close()
    assert problems == []


def test_scale_page_renders_with_its_plots(browser_context, tmp_path, artifacts):  # noqa: F811
    path = write_scale_report(comparison_of(tmp_path), tmp_path / "compare.html", notes=["A finding."])
    check_section(browser_context, path, artifacts / "compare-page.png", scripts=0)


def test_report_with_the_section_renders_with_its_plots(browser_context, tmp_path, artifacts):  # noqa: F811
    (tmp_path / "compare.json").write_text(comparison_of(tmp_path).to_json(["A finding."]), encoding="utf-8")
    result = ScoreResult.load(tmp_path / "large")
    path = write_report(result, tmp_path / "report.html", n_bootstrap=0,
                        scale=read_scale_section(tmp_path / "compare.json", result))
    check_section(browser_context, path, artifacts / "report-with-comparison.png", scripts=1)  # the report's own
