"""`wherefrom serve` shows its page while the session opens: the page is served at once, the API waits for the
session, and a failure to open reaches whoever waits."""

from __future__ import annotations

import threading

import pytest
from fastapi.testclient import TestClient

from wherefrom.errors import WherefromError
from wherefrom.explorer import SessionLoader, create_app


def test_the_page_is_served_before_the_session_opens_and_the_api_waits_for_it(explorer_demo):
    gate = threading.Event()

    def slow_open():  # noqa: ANN202 - returns the demo's session once the test lets it
        assert gate.wait(60)
        return explorer_demo.session

    loader = SessionLoader()
    opening = threading.Thread(target=loader.open, args=(slow_open,))
    opening.start()
    with TestClient(create_app(loader)) as client:
        page = client.get("/")
        assert page.status_code == 200 and "wherefrom" in page.text and not loader.ready
        assert client.get("/static/explorer.js").status_code == 200
        replies = []
        waiting = threading.Thread(target=lambda: replies.append(client.get("/api/info")))
        waiting.start()
        waiting.join(0.5)
        assert waiting.is_alive() and not replies  # /api/info waits for the session
        gate.set()
        waiting.join(60)
        assert replies[0].status_code == 200
        assert replies[0].json()["n_sequences"] == len(explorer_demo.session.sequences)
    opening.join(10)


def test_a_session_that_cannot_open_reaches_whoever_waits():
    def broken_open():  # noqa: ANN202
        raise WherefromError("no such run: give --run RUN")

    loader = SessionLoader()
    with pytest.raises(TimeoutError):
        loader.get(0.1)
    with pytest.raises(WherefromError, match="no such run"):
        loader.open(broken_open)
    with pytest.raises(WherefromError, match="no such run"):
        loader.get(30)
    assert loader.ready
