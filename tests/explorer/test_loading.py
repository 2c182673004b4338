"""`wherefrom serve` shows its page while the session opens: the page is served at once, the API waits for the
session, a failure to open reaches whoever waits, and the warm-up question changes no answer."""

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

    loader = SessionLoader(slow_open, warm_up=False)
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


def test_a_session_that_cannot_open_reaches_whoever_waits():
    failures = []

    def broken_open():  # noqa: ANN202
        raise WherefromError("no such run: give --run RUN")

    loader = SessionLoader(broken_open, on_failure=failures.append)
    with pytest.raises(WherefromError, match="no such run"):
        loader.get(30)
    assert loader.ready and [str(f) for f in failures] == ["no such run: give --run RUN"]
    with pytest.raises(TimeoutError):
        SessionLoader(lambda: threading.Event().wait(5), warm_up=False).get(0.1)


def test_the_warm_up_question_changes_no_answer(explorer_demo):
    question = {"prompt": explorer_demo.prompt, "completion": explorer_demo.completion, "top_k": 4}
    with TestClient(create_app(explorer_demo.session)) as client:
        before = client.post("/api/answer", json=question).json()
    loader = SessionLoader(lambda: explorer_demo.session)  # answers its warm-up question before it is ready
    assert loader.get(120) is explorer_demo.session
    with TestClient(create_app(loader)) as client:
        after = client.post("/api/answer", json=question).json()
    assert [s["row"] for s in after["top"]] == [s["row"] for s in before["top"]]
    assert [s["score"] for s in after["top"]] == pytest.approx([s["score"] for s in before["top"]], rel=1e-5)
