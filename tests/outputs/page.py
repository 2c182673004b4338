"""A small element tree of an HTML page, built with the standard library's parser (independent of the report)."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from html.parser import HTMLParser
from urllib.parse import unquote
from xml.etree import ElementTree

VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}


@dataclass
class Element:
    tag: str
    attrs: dict[str, str | None]
    children: list[Element | str] = field(default_factory=list)

    @property
    def text(self) -> str:
        """The text content, as a browser's textContent (entities decoded)."""
        return "".join(c if isinstance(c, str) else c.text for c in self.children)

    def iter(self):
        yield self
        for child in self.children:
            if isinstance(child, Element):
                yield from child.iter()

    def find_all(self, tag: str | None = None, cls: str | None = None) -> list[Element]:
        return [e for e in self.iter() if (tag is None or e.tag == tag)
                and (cls is None or cls in (e.attrs.get("class") or "").split())]

    def by_id(self, element_id: str) -> Element:
        found = [e for e in self.iter() if e.attrs.get("id") == element_id]
        assert len(found) == 1, f"expected one element with id {element_id!r}, found {len(found)}"
        return found[0]


class _TreeBuilder(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.root = Element("#document", {})
        self.stack = [self.root]

    def handle_starttag(self, tag, attrs):
        element = Element(tag, dict(attrs))
        self.stack[-1].children.append(element)
        if tag not in VOID:
            self.stack.append(element)

    def handle_endtag(self, tag):
        assert self.stack[-1].tag == tag, f"</{tag}> closes <{self.stack[-1].tag}>"
        self.stack.pop()

    def handle_data(self, data):
        self.stack[-1].children.append(data)


def parse(html: str) -> Element:
    """The element tree of ``html``; fails on mismatched tags (the report must be well formed)."""
    builder = _TreeBuilder()
    builder.feed(html)
    builder.close()
    assert builder.stack == [builder.root], "unclosed elements: " + ", ".join(e.tag for e in builder.stack[1:])
    return builder.root


DATA = "application/json"


def code_scripts(page: Element) -> list[Element]:
    """The page's scripts that run (not its JSON data blocks)."""
    return [s for s in page.find_all("script") if s.attrs.get("type") != DATA]


def data_blocks(page: Element) -> list[object]:
    """The page's JSON data blocks, parsed; each must hold no '<' (it could end its <script> element)."""
    blocks = [s.text for s in page.find_all("script") if s.attrs.get("type") == DATA]
    assert not [b for b in blocks if "<" in b]
    return [json.loads(b) for b in blocks]


def svg_of(uri: str) -> ElementTree.Element:
    """The SVG document of a data URI (percent-encoded or base64), parsed as XML."""
    if uri.startswith("data:image/svg+xml;base64,"):
        text = base64.b64decode(uri.removeprefix("data:image/svg+xml;base64,")).decode("utf-8")
    else:
        assert uri.startswith("data:image/svg+xml,"), uri[:40]
        text = unquote(uri.removeprefix("data:image/svg+xml,"))
    return ElementTree.fromstring(text.encode("utf-8"))
