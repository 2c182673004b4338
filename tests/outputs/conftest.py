"""Shared results for the report tests: a real tiny fit-and-score run, and its HTML report."""

from __future__ import annotations

import pytest
from tiny import TEXTS, save_model_dir, tiny_llama, write_jsonl

import wherefrom
from wherefrom.scoring.results import ScoreResult

MORE_TEXTS = [
    "the dog sat on the rug.", "a cat ran to the park.", "rain falls in spring.", "two plus two is four.",
    "berlin is the capital of germany.", "the moon is cold.", "fish swim in the sea.", "we eat bread, and jam.",
    "madrid is the capital of spain.", "the cat likes the mat.", "snow is white.", "a bird sat on the wall.",
    "the park is green.", "lions are big cats.", "three is odd.", "the sun sets in the west.",
]
QUERIES = [
    {"id": "capital", "prompt": "paris is the capital of", "completion": " france."},
    {"id": "cat", "prompt": "the cat sat on", "completion": " the mat."},
]


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> ScoreResult:
    """A real run: fit EK-FAC on 24 short texts with a 2-layer Llama, score 2 queries with every decomposition."""
    work = tmp_path_factory.mktemp("tiny-run")
    save_model_dir(tiny_llama(), work / "model")
    write_jsonl(work / "corpus.jsonl", [{"id": f"rec-{i}", "text": t} for i, t in enumerate(TEXTS + MORE_TEXTS)])
    write_jsonl(work / "queries.jsonl", QUERIES)
    wherefrom.fit(work / "model", work / "corpus.jsonl", work / "run", wherefrom.FitOptions(batch_size=8), quiet=True)
    options = wherefrom.ScoreOptions(batch_size=8, per_layer=True, per_token=True, self_influence=True)
    wherefrom.score(work / "run", work / "queries.jsonl", out=work / "scores", options=options, quiet=True)
    return ScoreResult.load(work / "scores")  # through the saved files, as the CLI's report command will
