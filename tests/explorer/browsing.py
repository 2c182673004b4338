"""What the explorer's browser tests share: a real uvicorn server, a Chromium context, and the page's helpers.

Like tests/chromium.py, importing it skips nothing: playwright is imported only when a test uses a browser.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import pytest
import uvicorn
from chromium import launch, playwright_api, watched_page

from wherefrom.explorer import create_app

ANSWER_TIMEOUT_MS = 60_000


@pytest.fixture(scope="module")
def server(explorer_demo) -> Iterator[str]:  # noqa: ANN001 - the conftest's demo
    """A uvicorn server on a free loopback port, in a thread; yields its address."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = uvicorn.Config(create_app(explorer_demo.session), host="127.0.0.1", port=port, log_level="warning")
    running = uvicorn.Server(config)
    thread = threading.Thread(target=running.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not running.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert running.started, "the explorer server did not start"
    yield f"http://127.0.0.1:{port}"
    running.should_exit = True
    thread.join(10)


@pytest.fixture(scope="module")
def browser(tmp_path_factory) -> Iterator[object]:  # noqa: ANN001 - pytest's factory
    """A headless Chromium context for the explorer's pages."""
    with playwright_api().sync_playwright() as playwright:
        context = launch(tmp_path_factory.mktemp("chromium-profile"), playwright,
                         viewport={"width": 1400, "height": 1000})
        yield context
        context.close()


def open_page(browser, server):  # noqa: ANN001, ANN201 - playwright objects
    """The explorer's page, loaded, and the problems it reports."""
    page, problems = watched_page(browser, server)
    playwright_api().expect(page.locator("#served")).to_contain_text("training sequences")
    return page, problems


def ask(page, prompt: str, completion: str = "", top_k: int = 5) -> None:  # noqa: ANN001 - a playwright page
    """Type a question into the page and ask it."""
    page.fill("#prompt", prompt)
    page.fill("#completion", completion)
    page.fill("#top-k", str(top_k))
    page.click("#ask-button")
