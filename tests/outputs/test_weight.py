"""The reduced demo's report: one self-contained file with every section, light enough to open at once.

Its size is deterministic (the same demo gives the same bytes), so it is bounded here; load times are measured by
benchmarks/report_weight.py, never asserted. Before plots were written compactly and a unit's sequences were drawn
from data on demand, this report weighed 8.7 MB; now 1.7 MB.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from chromium import NEEDS_BROWSER, browser_context, open_report  # noqa: F401 - the fixture

from outputs.page import code_scripts, data_blocks, parse, svg_of
from wherefrom.demo.pipeline import run_demo
from wherefrom.synthetic.cache import CACHE_ENV
from wherefrom.synthetic.config import reduced_config

MAX_BYTES = 2_500_000  # measured 1,731,311 bytes; the report before this bound weighed 8,658,495
QUERY_PARTS = ("sequences", "Where in the network", "Tail of the score distribution", "Which neurons carry it",
               "Memorisation")
COLOURS = {"p": (230, 97, 1), "n": (33, 102, 172)}  # orange raises the completion, blue lowers it (tokens.py)


@pytest.fixture(scope="module")
def reduced_demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The folder of `wherefrom demo --reduced` (its own model cache), with the report of 10 bootstrap sets."""
    work = tmp_path_factory.mktemp("reduced-demo")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(CACHE_ENV, str(work / "cache"))
        run_demo(work / "demo", reduced_config(), threads=2, quiet=True, bootstraps=10)
    yield work / "demo"


def query_ids(demo: Path) -> list[str]:
    return [json.loads(line)["query_id"] for line in (demo / "scores-ekfac" / "queries.jsonl").read_text().splitlines()]


def test_the_reduced_demo_report_is_light_self_contained_and_has_every_section(reduced_demo):
    html = (reduced_demo / "report.html").read_text(encoding="utf-8")
    assert len(html.encode("utf-8")) < MAX_BYTES
    page = parse(html)
    assert not page.find_all("link") and not page.find_all("iframe") and not page.find_all("object")
    for element in page.iter():  # nothing is fetched: every address is an anchor or an inline SVG
        for name in ("src", "href", "action", "srcset", "poster", "data"):
            value = element.attrs.get(name)
            assert value is None or value.startswith("#") or svg_of(value) is not None, (element.tag, name)
    assert "url(" not in "".join(s.text for s in page.find_all("style"))
    assert len(code_scripts(page)) == 1 and "src" not in code_scripts(page)[0].attrs
    ids = query_ids(reduced_demo)
    nav = [a.attrs["href"] for a in page.find_all("nav")[0].find_all("a")]
    assert nav == ["#overview", *[f"#query-{i}" for i in range(len(ids))], "#comparison"]
    page.by_id("overview"), page.by_id("comparison")
    blocks = data_blocks(page)
    assert len(blocks) == len(ids)  # one unit panel per query, its sequences as data
    for i, query_id in enumerate(ids):
        section = page.by_id(f"query-{i}")
        headings = [h.text for h in section.find_all("h3")]
        assert all(any(part in h for h in headings) for part in QUERY_PARTS), headings
        assert query_id in section.find_all("h2")[0].text
        assert [img.attrs["alt"].split(":")[0] for img in section.find_all("img")] == [
            "Layer heatmap", "1 - CDF of the positive scores on log-log axes with the fitted power law"]
        bars = section.find_all("button", "unit-bar")
        assert bars and len(blocks[i]["units"]) == len(bars)
        assert len(section.find_all("li", "seq")) == 10 and section.find_all("div", "tokens")[0].find_all("span")


@NEEDS_BROWSER[0]
@NEEDS_BROWSER[1]
def test_the_reduced_demo_report_fetches_nothing_and_draws_everything_in_chromium(browser_context, reduced_demo):  # noqa: F811
    requested: list[str] = []
    browser_context.on("request", lambda request: requested.append(request.url))
    page, problems = open_report(browser_context, reduced_demo / "report.html")
    assert {url.split(":", 1)[0] for url in requested} <= {"file", "data"}
    images = page.locator("img.plot").evaluate_all("images => images.map(i => i.complete && i.naturalWidth > 0)")
    assert images and all(images)
    colours = page.locator("#query-0 li.seq .tokens span[class]").evaluate_all(
        "spans => spans.map(s => [s.className, getComputedStyle(s).backgroundColor, s.style.getPropertyValue('--o'),"
        " getComputedStyle(s).color])")
    assert colours
    for name, colour, opacity, text in colours:  # the class is the colour, --o its opacity, w white text
        red, green, blue, alpha = re.fullmatch(r"rgba?\((\d+), (\d+), (\d+)(?:, ([\d.]+))?\)", colour).groups()
        assert (int(red), int(green), int(blue)) == COLOURS[name[0]]
        assert float(alpha or 1) == pytest.approx(float(opacity), abs=1 / 255)
        assert (text == "rgb(255, 255, 255)") == ("w" in name.split())
    page.locator("#query-0 button.unit-bar").first.click()
    detail = page.locator("#query-0-unit-0")
    assert detail.is_visible() and detail.locator("li.unit-seq").count() > 0
    assert detail.locator(".tokens span[class]").count() > 0
    page.close()
    assert problems == []
