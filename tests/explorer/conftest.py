"""One explorer session for all explorer tests: the reduced demo model, fitted on its corpus plus one hostile
document (HTML and <script> in its text and id) that states a planted fact, so that it ranks at the top."""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

import wherefrom
from wherefrom.explorer import ExplorerSession, create_app
from wherefrom.fileio import read_jsonl
from wherefrom.synthetic.cache import load_or_train
from wherefrom.synthetic.config import reduced_config

SCRIPT = "<script>window.hacked = 1</script>"
HOSTILE_ID = "<b>hostile</b>"
MAX_LENGTH = 64


@dataclass
class ExplorerDemo:
    """The session, its run and corpus, and a question whose top answer is the hostile document."""

    session: ExplorerSession
    run: Path
    corpus: Path
    prompt: str
    completion: str


@pytest.fixture(scope="session")
def explorer_demo(tmp_path_factory: pytest.TempPathFactory) -> ExplorerDemo:
    work = tmp_path_factory.mktemp("explorer")
    config = reduced_config()  # with MAX_LENGTH positions: the hostile document is longer than its usual 48
    config = replace(config, model=replace(config.model, context_length=MAX_LENGTH))
    model_dir = load_or_train(config, cache_root=work / "cache", num_threads=1, quiet=True)
    fact = next(row for row in read_jsonl(model_dir / "queries.jsonl") if row["kind"] == "training_wording")
    statement = fact["prompt"] + fact["completion"] + "."
    hostile = {"id": HOSTILE_ID, "text": f"{statement} {SCRIPT} {statement} <img src=x onerror=alert(1)> {statement}"}
    corpus = work / "corpus.jsonl"
    corpus.write_text((model_dir / "corpus.jsonl").read_text() + json.dumps(hostile) + "\n")
    run = work / "run"
    wherefrom.fit(model_dir, corpus, run, wherefrom.FitOptions(max_length=MAX_LENGTH, batch_size=32), quiet=True)
    return ExplorerDemo(ExplorerSession.open(run), run, corpus, fact["prompt"], fact["completion"])


@pytest.fixture(scope="session")
def client(explorer_demo: ExplorerDemo) -> TestClient:
    with TestClient(create_app(explorer_demo.session)) as test_client:
        yield test_client
