"""Corpus and query texts holding HTML show as text in the report's source and run nothing."""

from __future__ import annotations

import base64
import hashlib
import re

from outputs.page import code_scripts, parse, svg_of
from outputs.synthetic import BOLD, HOSTILE_ID, SCRIPT, synthetic_result
from wherefrom.outputs.report import write_report

# Every element the report itself writes; a corpus text that became markup would add others (b, i, ...).
REPORT_TAGS = {
    "#document", "html", "head", "meta", "title", "style", "body", "nav", "div", "a", "ol", "li", "span", "main",
    "header", "h1", "h2", "h3", "dl", "dt", "dd", "p", "strong", "em", "section", "table", "thead", "tbody", "tr",
    "th", "td", "img", "ul", "sup", "sub", "footer", "script",
}


def hostile_report(tmp_path) -> str:
    return write_report(synthetic_result(), tmp_path / "report.html", n_bootstrap=0).read_text(encoding="utf-8")


def test_html_in_texts_is_escaped_in_the_source(tmp_path):
    html = hostile_report(tmp_path)
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "&lt;b&gt;bold&lt;/b&gt;" in html
    assert "&lt;img src=x onerror=alert(2)&gt;" in html
    for raw in (SCRIPT, BOLD, HOSTILE_ID, "<i>paris</i>", "<model>"):
        assert raw not in html


def test_html_in_texts_adds_no_element_and_no_handler(tmp_path):
    page = parse(hostile_report(tmp_path))
    elements = list(page.iter())
    assert {e.tag for e in elements} <= REPORT_TAGS
    assert len(code_scripts(page)) == 1
    assert not [(e.tag, name) for e in elements for name in e.attrs if name.startswith("on")]
    for image in page.find_all("img"):
        svg = svg_of(image.attrs["src"])  # a whole SVG document in the URI, with no script of its own
        assert svg.tag == "{http://www.w3.org/2000/svg}svg" and not [e for e in svg.iter() if "script" in e.tag]


def test_html_in_texts_shows_as_text(tmp_path):
    page = parse(hostile_report(tmp_path))
    first = page.by_id("query-0").find_all("li", "seq")[0]
    assert SCRIPT in first.text and BOLD in first.text and "{{ not_jinja }}" in first.text
    assert first.find_all("span", "rid")[0].text == HOSTILE_ID
    assert page.by_id("query-0").find_all("h2")[0].text.endswith("capital <i>fr</i>")
    assert page.find_all("title")[0].text == "wherefrom report: synthetic <model>"
    assert SCRIPT in page.by_id("query-1").find_all("p", "qa")[0].text


def test_only_the_report_script_may_run(tmp_path):
    page = parse(hostile_report(tmp_path))
    policy = next(m.attrs["content"] for m in page.find_all("meta") if m.attrs.get("http-equiv"))
    script = code_scripts(page)[0].text
    digest = base64.b64encode(hashlib.sha256(script.encode("utf-8")).digest()).decode("ascii")
    directives = dict(d.strip().split(" ", 1) for d in policy.split(";"))
    assert directives["default-src"] == "'none'"
    assert directives["script-src"] == f"'sha256-{digest}'"
    assert not re.search(r"unsafe-(inline|eval)", directives["script-src"])
