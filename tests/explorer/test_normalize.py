"""The explorer's "rank by cosine" (normalize): the same ranking and numbers as `wherefrom score --normalize`."""

from __future__ import annotations

import json

import pytest

import wherefrom
from explorer.conftest import MAX_LENGTH


@pytest.fixture(scope="module")
def normalised(explorer_demo, tmp_path_factory):
    queries = tmp_path_factory.mktemp("normalised") / "queries.jsonl"
    queries.write_text(json.dumps({"prompt": explorer_demo.prompt, "completion": explorer_demo.completion}) + "\n")
    options = wherefrom.ScoreOptions(max_length=MAX_LENGTH, batch_size=32, normalize=True)
    return wherefrom.score(explorer_demo.run, queries, explorer_demo.corpus, options=options, quiet=True)


def test_rank_by_cosine_equals_normalised_scoring(client, explorer_demo, normalised):
    response = client.post("/api/answer", json={"prompt": explorer_demo.prompt, "completion": explorer_demo.completion,
                                                "top_k": 5, "normalize": True})
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["ranked_by"] == "cosine"
    assert [s["row"] for s in answer["top"]] == normalised.top(0, 5)
    for shown in answer["top"]:
        assert shown["cosine"] == pytest.approx(float(normalised.cosine[0, shown["row"]]), rel=1e-4, abs=1e-5)
        assert shown["score"] == pytest.approx(float(normalised.scores[0, shown["row"]]), rel=1e-4, abs=1e-3)


def test_rank_by_cosine_needs_all_layers(client, explorer_demo):
    response = client.post("/api/answer", json={"prompt": explorer_demo.prompt, "completion": explorer_demo.completion,
                                                "layers": "upper", "normalize": True})
    assert response.status_code == 400 and "layers 'all'" in response.json()["error"]


def test_with_an_index_the_cosine_ranking_is_the_exact_one(explorer_demo, normalised, tmp_path_factory):
    from fastapi.testclient import TestClient

    from wherefrom.explorer import ExplorerSession, create_app
    from wherefrom.index import build_index
    from wherefrom.options import IndexOptions

    folder = tmp_path_factory.mktemp("explorer-cosine-index") / "index"
    build_index(explorer_demo.run, folder, explorer_demo.corpus,
                IndexOptions(max_length=MAX_LENGTH, batch_size=32, budget="full"), quiet=True)
    with TestClient(create_app(ExplorerSession.open(explorer_demo.run, index=folder))) as indexed:
        response = indexed.post("/api/answer", json={"prompt": explorer_demo.prompt,
                                                     "completion": explorer_demo.completion, "top_k": 5,
                                                     "normalize": True})
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["ranking"] == "index" and answer["ranked_by"] == "cosine"
    assert [s["row"] for s in answer["top"]] == normalised.top(0, 5)
    for shown in answer["top"]:  # the shown cosines are the exact re-scores
        assert shown["cosine"] == pytest.approx(float(normalised.cosine[0, shown["row"]]), rel=1e-4, abs=1e-5)
