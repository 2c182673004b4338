"""The JSON API through FastAPI's test client: answers equal an independent float64 computation, bad requests get a 4xx with a
clear message, questions are answered in turn, can be cancelled, and corpus text is never served as HTML."""

from __future__ import annotations

import copy
import json
import math
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch
from exact import sequence_gradient
from outputs.page import code_scripts, parse
from safetensors.torch import load_file

import wherefrom
from explorer.conftest import HOSTILE_ID, MAX_LENGTH, SCRIPT
from wherefrom.analysis import restricted_scores
from wherefrom.models.selection import select_layers
from wherefrom.scoring.generation import first_sentence_end


def ask(client, **question):
    response = client.post("/api/answer", json=question)
    assert response.status_code == 200, response.text
    return response.json()


@pytest.fixture(scope="module")
def independent(explorer_demo):
    """The question's influence on every sequence, per layer [layers, sequences], in float64 without wherefrom's
    engine: autograd gradients (tests/exact.py) and EK-FAC's eq. 21 applied to the factors read from the file."""
    session = explorer_demo.session
    model = copy.deepcopy(session.loaded.model).double()
    layers = select_layers(model, "mlp")
    assert [layer.name for layer in layers] == [layer.name for layer in session.layers]
    query = session.make_query(explorer_demo.prompt, explorer_demo.completion)
    q = sequence_gradient(model, layers, list(query.input_ids), first_target=len(query.prompt_ids))
    train = torch.stack([sequence_gradient(model, layers, list(s.input_ids)) for s in session.sequences])
    factors = load_file(str(explorer_demo.run / "factors.safetensors"))
    per_layer, lo = [], 0
    for layer in layers:
        Q_A, Q_S, eigenvalues = (factors[f"{layer.name}/{part}"].double() for part in ("Q_A", "Q_S", "eigenvalues"))
        size = eigenvalues.numel()
        V = q[lo:lo + size].reshape(eigenvalues.shape)
        solved = Q_S @ ((Q_S.T @ V @ Q_A) / (eigenvalues + 0.1 * eigenvalues.mean())) @ Q_A.T  # eq. 21, λ = 0.1 mean Λ
        per_layer.append(train[:, lo:lo + size] @ solved.reshape(-1))
        lo += size
    return torch.stack(per_layer)


def test_answer_ranks_like_an_independent_float64_computation(client, explorer_demo, independent):
    answer = ask(client, prompt=explorer_demo.prompt, completion=explorer_demo.completion, top_k=5)
    exact = independent.sum(0)
    expected = torch.topk(exact, 5).indices.tolist()
    assert [s["row"] for s in answer["top"]] == expected
    sequences = explorer_demo.session.sequences
    assert [s["record_id"] for s in answer["top"]] == [sequences[r].record_id for r in expected]
    assert answer["top"][0]["record_id"] == HOSTILE_ID
    for shown in answer["top"]:
        score = float(exact[shown["row"]])
        assert shown["score"] == pytest.approx(score, rel=1e-3, abs=1e-3)
        assert sum(t["value"] for t in shown["tokens"]) == pytest.approx(score, rel=1e-3, abs=1e-2)
        assert "".join(t["text"] for t in shown["tokens"]) == explorer_demo.session.texts[shown["row"]]
        for name, block in explorer_demo.session.blocks.items():
            assert shown["blocks"][name] == pytest.approx(
                float(restricted_scores(independent[:, shown["row"]], block)), rel=1e-3, abs=1e-2)
    assert answer["ranking"] == "exact" and answer["n_sequences"] == len(sequences)
    assert answer["tail"]["n_scores"] == len(sequences)
    assert answer["completion_logprob"] < 0 and not answer["generated"]


def test_the_figures_hold_the_tail_and_layer_split_of_an_independent_computation(client, explorer_demo, independent):
    answer = ask(client, prompt=explorer_demo.prompt, completion=explorer_demo.completion, top_k=5)
    exact = independent.sum(0).numpy()
    positive = np.sort(exact[exact > 0])
    tail = answer["tail"]
    assert tail["n_positive"] == positive.size < 2000  # so every point is drawn
    assert tail["x"] == pytest.approx(positive.tolist(), rel=1e-3, abs=1e-3)
    n = positive.size
    assert tail["survival"] == pytest.approx([(n - i) / n for i in range(n)], rel=1e-12)  # 1 - CDF by rank (ties
    # among duplicated documents too)
    if tail["alpha"] is not None:  # the line: the share of scores >= x_min there, falling as x^(1 - alpha)
        (x0, y0), (x1, y1) = tail["fit_line"]
        assert x0 == tail["x_min"] and x1 == pytest.approx(positive[-1], rel=1e-3)
        assert np.mean(positive > x0 * 1.002) <= y0 <= np.mean(positive >= x0 * 0.998)
        assert math.log(y1 / y0) / math.log(x1 / x0) == pytest.approx(1 - tail["alpha"], rel=1e-9)

    heatmap = answer["layer_heatmap"]
    layer_of = [int(re.search(r"\.(\d+)\.", layer.name).group(1)) for layer in explorer_demo.session.layers]
    numbers = sorted(set(layer_of))
    assert heatmap["block_labels"] == [f"layer {number}" for number in numbers]
    top = [s["row"] for s in answer["top"]]
    assert sorted(heatmap["rows"]) == sorted(top)
    by_block = np.stack([independent[[i for i, x in enumerate(layer_of) if x == number]].sum(0).numpy()
                         for number in numbers])
    expected = by_block[:, heatmap["rows"]]
    assert np.array(heatmap["matrix"]) == pytest.approx(expected, rel=1e-3, abs=1e-3)
    weights = np.abs(np.array(heatmap["matrix"]))
    centres = (np.arange(len(numbers))[:, None] * weights).sum(0) / weights.sum(0)
    assert np.all(np.diff(centres) >= 0)  # lower layers first
    ids = [explorer_demo.session.sequences[row].record_id for row in heatmap["rows"]]
    assert heatmap["labels"] == [f"#{top.index(row) + 1} {rid if len(rid) <= 18 else rid[:17] + '…'}"
                                 for row, rid in zip(heatmap["rows"], ids, strict=True)]
    assert heatmap["limit"] == pytest.approx(np.abs(expected).max(), rel=1e-3)
    assert heatmap["colours"] == [[33, 102, 172], [247, 247, 247], [230, 97, 1]]  # blue, near-white, orange


def test_a_layer_block_ranks_by_the_scores_of_its_layers_only(client, explorer_demo, independent):
    block = explorer_demo.session.blocks["upper"]
    answer = ask(client, prompt=explorer_demo.prompt, completion=explorer_demo.completion, top_k=4, layers="upper")
    restricted = torch.as_tensor(restricted_scores(independent, block))
    assert [s["row"] for s in answer["top"]] == torch.topk(restricted, 4).indices.tolist()
    for shown in answer["top"]:
        assert shown["score"] == pytest.approx(float(restricted[shown["row"]]), rel=1e-3, abs=1e-2)
        assert sum(t["value"] for t in shown["tokens"]) == pytest.approx(shown["score"], rel=1e-3, abs=1e-2)
    assert answer["layer_range"] == f"transformer layer {block.first_layer}"


def _greedy(model, prompt_ids, n: int) -> list[int]:
    """n greedy tokens after the prompt, by argmax of the model's logits (not through `generate`)."""
    ids = list(prompt_ids)
    with torch.no_grad():
        for _ in range(n):
            ids.append(int(model(input_ids=torch.tensor([ids])).logits[0, -1].argmax()))
    return ids[len(prompt_ids):]


def _first_sentence(tokenizer, ids: list[int]) -> list[int]:
    """The tokens up to the first one that writes a '.', when the text goes on with a space (the demo's facts)."""
    ids = ids[:ids.index(tokenizer.eos_token_id)] if tokenizer.eos_token_id in ids else ids
    text = tokenizer.decode(ids)
    assert ". " in text, text  # the demo model's answer is a sentence and more
    return next(ids[:k] for k in range(1, len(ids) + 1) if "." in tokenizer.decode(ids[:k]))


def test_without_a_completion_the_model_writes_its_first_sentence_streamed(client, explorer_demo):
    session = explorer_demo.session
    tokenizer = session.loaded.tokenizer
    query = session.make_query(explorer_demo.prompt, None)
    greedy = _greedy(session.loaded.model, query.prompt_ids, 16)
    for stop, expected_ids in (("sentence", _first_sentence(tokenizer, greedy)), ("eos", greedy)):
        job = client.post("/api/questions", json={"prompt": explorer_demo.prompt, "max_new_tokens": 16,
                                                  **({"stop": stop} if stop == "eos" else {})}).json()
        final = _wait(client, job["id"])
        assert final["status"] == "done", final
        expected = tokenizer.decode(expected_ids)
        assert final["answer"]["completion"] == expected and final["answer"]["generated"]
        written = [e["text"] for e in final["events"] if e["kind"] == "completion"]
        assert written[-1] == expected and len(written) >= len(expected_ids)
        assert [e["stage"] for e in final["events"] if e["kind"] == "stage"][0] == "completion"


def test_score_records_how_the_model_wrote_a_completion(explorer_demo, tmp_path):
    queries = tmp_path / "queries.jsonl"
    queries.write_text(json.dumps({"id": "own", "prompt": explorer_demo.prompt}) + "\n"
                       + json.dumps({"id": "given", "prompt": explorer_demo.prompt, "completion": " x"}) + "\n")
    options = wherefrom.ScoreOptions(max_length=MAX_LENGTH, batch_size=32, max_new_tokens=16, stop="sentence")
    wherefrom.score(explorer_demo.run, queries, explorer_demo.corpus, out=tmp_path / "out", options=options,
                    quiet=True)
    rows = [json.loads(line) for line in (tmp_path / "out" / "queries.jsonl").read_text().splitlines()]
    session = explorer_demo.session
    greedy = _greedy(session.loaded.model, session.make_query(explorer_demo.prompt, None).prompt_ids, 16)
    assert rows[0]["completion_ids"] == _first_sentence(session.loaded.tokenizer, greedy)
    assert rows[0]["generation"] == {"stop": "sentence", "max_new_tokens": 16, "sample": False, "ended": "sentence"}
    assert rows[1]["generation"] is None


@pytest.mark.parametrize(("text", "end"), [(" Genvir Gun. The small dog", 12), (" Genvir Gun.", None),
                                           (" 3.5 apples", None), (" it is 3. Then", 9), ("\n\nfirst line\nsecond", 12),
                                           (' he said "stop." and left', 16), (" why? because", 5)])
def test_where_a_first_sentence_ends(text, end):
    assert first_sentence_end(text) == end


def _wait(client, job_id, seconds: float = 120):
    """The question's final view with all its events; fails if it has not ended within ``seconds``."""
    events, deadline = [], time.monotonic() + seconds
    while time.monotonic() < deadline:
        view = client.get(f"/api/questions/{job_id}", params={"since": len(events)}).json()
        events += view["events"]
        if view["status"] in ("done", "failed", "cancelled"):
            return {**view, "events": events}
        time.sleep(0.01)
    raise AssertionError(f"question {job_id} had not ended after {seconds:.0f} s (status {view['status']!r})")


@pytest.mark.parametrize(("question", "status", "message"), [
    ({"prompt": ""}, 422, "prompt"),
    ({"completion": "x"}, 422, "prompt: Field required"),
    ({"prompt": "a", "top_k": 0}, 422, "top_k"),
    ({"prompt": "a", "layers": "sideways"}, 422, "layers"),
    ({"prompt": "a", "colour": "red"}, 422, "colour"),
    ({"prompt": "a", "completion": ""}, 400, "the completion is empty"),
    ({"prompt": "word " * 80, "completion": " x"}, 400, "over --max-length"),
])
def test_an_invalid_question_gets_a_4xx_and_a_clear_message(client, question, status, message):
    for path in ("/api/questions", "/api/answer"):
        response = client.post(path, json=question)
        assert response.status_code == status, response.text
        assert message in response.json()["error"]
        assert "Traceback" not in response.text


def test_malformed_bodies_unknown_jobs_and_routes_get_json_errors(client):
    response = client.post("/api/questions", content=b"{not json", headers={"Content-Type": "application/json"})
    error = response.json()["error"]
    assert response.status_code == 422 and "invalid request" in error
    assert "the body is not valid JSON" in error and "at character 1" in error and "decode error" not in error
    wrong = client.post("/api/questions", json={"prompt": 5}).json()["error"]
    assert wrong.startswith("invalid request: prompt: ") and "string" in wrong
    for path in ("/api/questions/q999", "/api/questions/q999/report", "/nowhere"):
        response = client.get(path)
        assert response.status_code == 404 and response.json()["error"]
    assert "q999" in client.get("/api/questions/q999").json()["error"]


def test_two_questions_at_once_are_both_answered(client, explorer_demo):
    questions = [{"prompt": explorer_demo.prompt, "completion": explorer_demo.completion, "top_k": 3},
                 {"prompt": explorer_demo.prompt, "completion": " somewhere", "top_k": 3}]
    with ThreadPoolExecutor(2) as pool:
        answers = list(pool.map(lambda q: client.post("/api/answer", json=q), questions))
    assert [a.status_code for a in answers] == [200, 200]
    assert [a.json()["completion"] for a in answers] == [q["completion"] for q in questions]


def test_questions_wait_their_turn_and_a_queued_one_can_be_cancelled(client, explorer_demo):
    jobs = client.app.state.jobs
    release, running = threading.Event(), threading.Event()
    blocker = jobs.submit(lambda job: (running.set(), release.wait()))
    assert running.wait(30)
    view = client.post("/api/questions", json={"prompt": explorer_demo.prompt, "completion": " x"}).json()
    assert view["status"] == "queued" and view["position"] == 1
    assert client.get(f"/api/questions/{view['id']}/report").status_code == 409
    assert client.post(f"/api/questions/{view['id']}/cancel").status_code == 200
    release.set()
    assert _wait(client, view["id"])["status"] == "cancelled"
    assert blocker.finished.wait(30) and blocker.status == "done"


def test_a_running_question_stops_at_its_next_step_when_cancelled(client):
    jobs = client.app.state.jobs
    started, steps = threading.Event(), []

    def work(job):
        started.set()
        while True:
            steps.append(1)
            job.emit("stage", stage="working", message="", done=len(steps), total=0)

    job = jobs.submit(work)
    assert started.wait(30)
    client.post(f"/api/questions/{job.id}/cancel")
    assert job.finished.wait(30) and job.status == "cancelled"


def test_corpus_text_is_data_in_json_and_escaped_in_the_report(client, explorer_demo):
    job = client.post("/api/questions", json={"prompt": explorer_demo.prompt, "completion": explorer_demo.completion,
                                              "top_k": 3}).json()
    final = _wait(client, job["id"])
    top = final["answer"]["top"][0]
    assert top["record_id"] == HOSTILE_ID and SCRIPT in top["text"]
    page = client.get("/")
    assert page.status_code == 200 and "script-src 'self'" in page.headers["content-security-policy"]
    report = client.get(f"/api/questions/{job['id']}/report", params={"bootstraps": 0})
    assert report.status_code == 200 and "attachment" in report.headers["content-disposition"]
    document = parse(report.text)
    assert len(code_scripts(document)) == 1 and not document.find_all("b")  # the report's own script only
    card = document.find_all("li", cls="seq")[0]
    assert card.find_all(cls="rid")[0].text == HOSTILE_ID and SCRIPT in card.find_all(cls="tokens")[0].text


def test_the_api_is_described_by_an_openapi_schema(client):
    schema = client.get("/openapi.json").json()
    assert {"/api/info", "/api/questions", "/api/questions/{job_id}", "/api/questions/{job_id}/cancel",
            "/api/questions/{job_id}/report", "/api/answer"} <= set(schema["paths"])
    assert {"AskRequest", "AnswerView", "JobView", "ErrorReply"} <= set(schema["components"]["schemas"])
    info = client.get("/api/info").json()
    assert info["n_sequences"] == len(client.app.state.loader.get().sequences) and "nats" in info["units"]


def test_with_a_full_size_index_the_answer_ranks_like_the_exact_scan(explorer_demo, independent, tmp_path_factory):
    from fastapi.testclient import TestClient

    from wherefrom.explorer import ExplorerSession, create_app
    from wherefrom.index import build_index
    from wherefrom.options import IndexOptions

    folder = tmp_path_factory.mktemp("explorer-index") / "index"
    build_index(explorer_demo.run, folder, explorer_demo.corpus,
                IndexOptions(max_length=MAX_LENGTH, batch_size=32, budget="full"), quiet=True)
    with TestClient(create_app(ExplorerSession.open(explorer_demo.run, index=folder))) as indexed:
        answer = ask(indexed, prompt=explorer_demo.prompt, completion=explorer_demo.completion, top_k=5)
        upper = ask(indexed, prompt=explorer_demo.prompt, completion=explorer_demo.completion, top_k=4, layers="upper")
    assert answer["ranking"] == "index"
    exact = independent.sum(0)
    assert [s["row"] for s in answer["top"]] == torch.topk(exact, 5).indices.tolist()
    for shown in answer["top"]:  # the shown scores are the exact re-scores
        assert shown["score"] == pytest.approx(float(exact[shown["row"]]), rel=1e-3, abs=1e-3)
    restricted = torch.as_tensor(restricted_scores(independent, explorer_demo.session.blocks["upper"]))
    assert [s["row"] for s in upper["top"]] == torch.topk(restricted, 4).indices.tolist()  # the index's block ranking
