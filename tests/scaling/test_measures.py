"""`compare`'s measures against values worked out by hand on the tiny folders of folders.py."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

import wherefrom
from scaling.folders import write_corpus, write_folder, write_model
from wherefrom.analysis.intervals import t_interval
from wherefrom.analysis.surface import WordBM25, content_words
from wherefrom.scoring.results import QueryInfo, ScoreResult, SequenceInfo

C = 6  # sequences


def idf(n: int) -> float:
    """The paper's IDF for a word held by n of the C sequences."""
    return math.log((C - n + 0.5) / (n + 0.5) + 1)


I1, I2, I3 = idf(1), idf(2), idf(3)


@pytest.fixture
def compared(tmp_path):
    corpus = write_corpus(tmp_path)
    folders = [write_folder(tmp_path, "small", corpus), write_folder(tmp_path, "large", corpus)]
    (tmp_path / "truth.jsonl").write_text(
        "".join(json.dumps({"query_id": q, "record_ids": r}) + "\n"
                for q, r in (("capital-en", ["r0", "r1"]), ("capital-fr", ["r0", "r1"]), ("sum", ["r3"]))))
    (tmp_path / "pairs.txt").write_text("# original, translation, their languages\ncapital-en capital-fr en fr\n")
    return wherefrom.compare(folders, k=2, truth=tmp_path / "truth.jsonl", pairs=tmp_path / "pairs.txt")


def values(comparison, label: str, measure: str) -> list[float]:
    folder = next(f for f in comparison.folders if f.label == label)
    return folder.values[measure].tolist()


def test_word_bm25_is_the_papers_formula_over_words():
    bm25 = WordBM25(["Paris is the capital of France", "Paris est la capitale de la France", "the cat sat",
                     "two plus two is four", "le chat dort", "France has wine"])
    # query words the, capital, of, france, is, paris: held by 2, 1, 1, 3, 2, 2 of the 6 sequences
    expected = [3 * I2 + 2 * I1 + I3, I3 + I2, I2, I2, 0.0, I3]
    assert bm25.scores("The capital of France is Paris") == pytest.approx(expected)
    assert content_words("Le chat est sur la table, and the cat is here") == {"chat", "table", "cat", "here"}


def test_bm25_of_each_models_top_k(compared):
    # small's top-2: rows 0, 5 / 1, 0 / 3, 2; large's: rows 1, 5 / 0, 1 / 3, 5
    assert values(compared, "small", "bm25_top_k") == pytest.approx(
        [(3 * I2 + 2 * I1 + I3 + I3) / 2, (4 * I1 + I3 + I2 + I3 + I2) / 2, (3 * I1 + I2) / 2])
    assert values(compared, "large", "bm25_top_k") == pytest.approx(
        [(I3 + I2 + I3) / 2, (I3 + I2 + 4 * I1 + I3 + I2) / 2, (3 * I1 + I2) / 2])


def test_share_of_positive_influence_sharing_no_content_word(compared):
    # capital queries share no content word with rows 2, 3, 4; the sum query with rows 0, 1, 2, 4, 5
    assert values(compared, "small", "disjoint_share") == pytest.approx([0.5 / 8.5, 1.2 / 8.2, 1.5 / 7.5], rel=1e-6)
    assert values(compared, "large", "disjoint_share") == pytest.approx([2 / 11, 0.1 / 9.1, 1.5 / 3.5], rel=1e-6)


def test_layer_thirds_of_the_top_k(compared):
    # small, query 0, rows 0 and 5 split (1, 1, 3) and (-1, 1, 2): |.| sums 2, 2, 5; the others split evenly
    lower, middle, upper = (values(compared, "small", f"layers_{t}") for t in ("lower", "middle", "upper"))
    assert [lower[0], middle[0], upper[0]] == pytest.approx([2 / 9, 2 / 9, 5 / 9])
    assert lower[1:] == pytest.approx([1 / 3, 1 / 3]) and upper[1:] == pytest.approx([1 / 3, 1 / 3])


def test_tail_top_share(compared):
    # the top 1% of 6 sequences is 1 sequence
    assert values(compared, "small", "top_share") == pytest.approx([5 / 8.5, 4 / 8.2, 6 / 7.5], rel=1e-6)
    assert all(math.isnan(a) for a in values(compared, "small", "tail_alpha"))  # < 10 positive scores: no fit


def test_agreement_between_models(compared):
    (agreement,) = compared.agreements
    # ranks, ascending, worked by hand (ties share the mean rank); Spearman = Pearson of the ranks
    q0 = 1 - 6 * 14 / (6 * 35)  # small [6,4,3,1,2,5], large [3,6,4,1,2,5]
    q1 = 7 / math.sqrt(17.5 * 17)  # small [5,6,3,2,4,1], large [6,5,1.5,3,1.5,4]
    q2 = 8.5 / 15.5  # small [2,2,5,6,2,4], large [4,2,2,6,2,5]
    assert agreement.values["spearman"].tolist() == pytest.approx([q0, q1, q2])
    assert agreement.values["overlap"].tolist() == [0.5, 1.0, 0.5]


def test_recall_of_the_facts_carriers(compared):
    assert values(compared, "small", "recall_at_k") == [0.5, 1.0, 1.0]
    assert values(compared, "large", "recall_at_k") == [0.5, 1.0, 1.0]
    interval = next(f for f in compared.folders if f.label == "small").intervals["recall_at_k"]
    half = 4.302652729749464 * math.sqrt(1 / 12) / math.sqrt(3)  # t(0.975, 2) s / sqrt(n), s^2 = 1/12
    assert (interval.mean, interval.n) == (pytest.approx(5 / 6), 3) and interval.high == pytest.approx(5 / 6 + half)


def test_pairs_rank_correlation_and_other_language_share(compared):
    assert values(compared, "small", "pair_spearman") == pytest.approx([1 - 6 * 26 / 210])
    assert values(compared, "large", "pair_spearman") == pytest.approx([6.5 / math.sqrt(17.5 * 17)])
    # capital-fr's positive influence from sequences in English (rows 0, 2, 3, 5), languages from the corpus
    assert values(compared, "small", "other_language_share") == pytest.approx([3.2 / 8.2], rel=1e-6)
    assert values(compared, "large", "other_language_share") == pytest.approx([6.1 / 9.1], rel=1e-6)
    assert compared.languages.endswith("corpus.jsonl")


def test_model_size_from_the_safetensors_headers_and_the_json(compared, tmp_path):
    assert [f.parameters for f in compared.folders] == [40, 4000] and compared.axis == "parameters"
    written = json.loads(compared.to_json())
    assert written["generator"] == "wherefrom compare" and "t-interval" in written["interval"]
    small = written["folders"][0]["measures"]
    assert small["recall_at_k"]["per_query"] == {"capital-en": 0.5, "capital-fr": 1.0, "sum": 1.0}
    assert small["pair_spearman"]["per_query"] == {"capital-en → capital-fr": pytest.approx(1 - 6 * 26 / 210)}
    assert written["folders"][0]["measures"]["tail_alpha"]["mean"] is None


def test_checkpoints_are_placed_by_training_step(tmp_path):
    corpus = write_corpus(tmp_path)
    model = write_model(tmp_path, "small", step=500)
    late = tmp_path / "models" / "checkpoint-2000"
    late.mkdir()
    (late / "model.safetensors").write_bytes((model / "model.safetensors").read_bytes())
    folders = [write_folder(tmp_path, "small", corpus, model=model), write_folder(tmp_path, "large", corpus, model=late)]
    comparison = wherefrom.compare(folders, k=2)
    assert comparison.axis == "training step" and [f.step for f in comparison.folders] == [500, 2000]
    assert "recall_at_k" not in comparison.folders[0].values and "pair_spearman" not in comparison.folders[0].values


def test_power_law_exponent_of_the_tail(tmp_path):
    scores = [float(v) for v in range(1, 11)] + [-1.0, -2.0]
    texts = [f"text {i}" for i in range(12)]
    for name in ("a", "b"):
        ScoreResult(torch.tensor([scores]), [SequenceInfo(i, f"r{i}", 0, 2, t) for i, t in enumerate(texts)],
                    [QueryInfo(0, "q", "text", " 1", [], [])], ["model.layers.0.mlp"]).save(tmp_path / name)
    comparison = wherefrom.compare([tmp_path / "a", tmp_path / "b"], k=3)
    # exactly 10 positive scores: x_min = 1, alpha = 1 + n / sum(log(x / x_min))
    assert comparison.folders[0].values["tail_alpha"].tolist() == pytest.approx([1 + 10 / math.log(math.factorial(10))])
    assert comparison.folders[0].values["top_share"].tolist() == pytest.approx([10 / 55])
    assert comparison.axis == "folder" and math.isnan(comparison.folders[0].values["layers_lower"][0])
    assert comparison.agreements[0].values["spearman"].tolist() == [1.0]


def test_t_interval_by_hand():
    interval = t_interval([1.0, 2.0, 3.0, float("nan")])
    assert (interval.mean, interval.n) == (2.0, 3)
    assert interval.low == pytest.approx(2 - 4.302652729749464 / np.sqrt(3))
    assert math.isnan(t_interval([1.0]).low) and t_interval([]).n == 0


def test_queries_are_matched_by_id_not_by_position(tmp_path, compared):
    (tmp_path / "shuffled").mkdir()
    corpus = write_corpus(tmp_path / "shuffled")
    small = write_folder(tmp_path / "shuffled", "small", corpus)
    large = ScoreResult.load(tmp_path / "large")
    order = [2, 0, 1]  # the large model's queries saved in another order, each with its own scores
    large.queries = [QueryInfo(i, *(lambda q: (q.query_id, q.prompt, q.completion, [], []))(large.queries[j]))
                     for i, j in enumerate(order)]
    large.scores, large.per_layer = large.scores[order], large.per_layer[:, order]
    shuffled = wherefrom.compare([small, large.save(tmp_path / "shuffled" / "large")], k=2,
                                 truth=tmp_path / "truth.jsonl", pairs=tmp_path / "pairs.txt")
    for measure, values in compared.folders[1].values.items():
        assert shuffled.folders[1].values[measure].tolist() == pytest.approx(values.tolist(), nan_ok=True), measure
    assert shuffled.agreements[0].values["spearman"].tolist() == pytest.approx(
        compared.agreements[0].values["spearman"].tolist())
