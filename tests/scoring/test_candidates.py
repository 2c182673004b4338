"""Candidate filtering (eq. 28-29) against a brute-force pure-Python BM25 with binary term presence."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest

from wherefrom.scoring.candidates import CandidateIndex, corpus_fingerprint, query_token_ids
from wherefrom.scoring.results import QueryInfo


def brute_force_scores(corpus: list[list[int]], query: list[int], k1: float) -> list[float]:
    """Eq. 28-29 written out term by term, one document at a time."""
    documents = [set(doc) for doc in corpus]
    n_documents = len(documents)
    scores = []
    for doc in documents:
        total = 0.0
        for token in set(query):
            x = 1.0 if token in doc else 0.0
            containing = sum(token in other for other in documents)
            idf = math.log((n_documents - containing + 0.5) / (containing + 0.5) + 1.0)
            total += (k1 + 1.0) * x / (k1 + x) * idf
        scores.append(total)
    return scores


def brute_force_top(scores: list[float], n: int) -> list[int]:
    return sorted(range(len(scores)), key=lambda row: (-scores[row], row))[:n]


def random_corpus(rng: random.Random, n_documents: int, vocab: int, max_len: int) -> list[list[int]]:
    corpus = [[rng.randrange(vocab) for _ in range(rng.randrange(max_len + 1))] for _ in range(n_documents)]
    corpus[3] = []  # an empty document scores 0 for every query
    return corpus


@pytest.mark.parametrize("k1", [1.5, 0.4])
def test_scores_match_brute_force(k1: float) -> None:
    rng = random.Random(0)
    corpus = random_corpus(rng, n_documents=40, vocab=60, max_len=25)
    index = CandidateIndex.from_corpus([np.array(doc) for doc in corpus], k1=k1)
    # Queries repeat tokens and include ids the corpus never holds (>= its largest id + 1).
    queries = [[rng.randrange(70) for _ in range(rng.randrange(1, 30))] for _ in range(8)]
    expected = np.array([brute_force_scores(corpus, q, k1) for q in queries])
    np.testing.assert_allclose(index.scores_batch(queries), expected, rtol=0, atol=1e-12)
    for query, row in zip(queries, expected):
        np.testing.assert_allclose(index.scores(query), row, rtol=0, atol=1e-12)


def test_documents_are_split_into_index_blocks_consistently(monkeypatch: pytest.MonkeyPatch) -> None:
    import wherefrom.scoring.candidates as candidates

    rng = random.Random(1)
    corpus = random_corpus(rng, n_documents=23, vocab=30, max_len=12)
    whole = CandidateIndex.from_corpus(corpus)
    monkeypatch.setattr(candidates, "_CHUNK_DOCUMENTS", 5)
    blocked = CandidateIndex.from_corpus(corpus)
    assert blocked.fingerprint == whole.fingerprint
    query = list(range(30))
    np.testing.assert_allclose(blocked.scores(query), brute_force_scores(corpus, query, 1.5), rtol=0, atol=1e-12)


def test_top_orders_by_score_then_row() -> None:
    corpus = [[1, 2], [3], [1, 2, 2], [2, 1], [5], [2]]
    index = CandidateIndex.from_corpus(corpus)
    assert index.top([1, 2], 6).tolist() == [0, 2, 3, 5, 1, 4]
    assert index.top([1, 2], 2).tolist() == [0, 2]  # the cut falls inside a tie: lower rows win
    assert index.top([4, 9], 3).tolist() == [0, 1, 2]  # no document matches: all tie at 0


def test_top_matches_brute_force_for_every_n() -> None:
    rng = random.Random(2)
    corpus = random_corpus(rng, n_documents=30, vocab=8, max_len=4)  # small vocabulary: many exact ties
    index = CandidateIndex.from_corpus(corpus)
    queries = [[rng.randrange(8) for _ in range(3)] for _ in range(5)]
    for n in range(1, 34):
        expected = [brute_force_top(brute_force_scores(corpus, q, 1.5), n) for q in queries]
        assert index.top_batch(queries, n).tolist() == expected
        assert index.top(queries[0], n).tolist() == expected[0]


def test_n_larger_than_corpus_returns_every_row() -> None:
    index = CandidateIndex.from_corpus([[1], [2, 1], [3]])
    assert index.top([1], 10).tolist() == [0, 1, 2]
    assert index.top_batch([[1], [3]], 10).shape == (2, 3)


def test_save_load_round_trip(tmp_path) -> None:
    rng = random.Random(3)
    corpus = random_corpus(rng, n_documents=25, vocab=40, max_len=15)
    index = CandidateIndex.from_corpus(corpus, vocab_size=50, k1=1.2)
    path = index.save(tmp_path / "candidates.npz")
    assert path == tmp_path / "candidates.npz"
    with np.load(path, allow_pickle=False) as stored:  # plain arrays only, no pickled objects
        assert stored["indices"].size == sum(len(set(doc)) for doc in corpus)

    loaded = CandidateIndex.load(path, expected_fingerprint=corpus_fingerprint(corpus))
    assert (loaded.n_documents, loaded.vocab_size, loaded.k1) == (25, 50, 1.2)
    assert loaded.fingerprint == index.fingerprint
    query = [rng.randrange(50) for _ in range(20)]
    np.testing.assert_array_equal(loaded.scores(query), index.scores(query))
    np.testing.assert_allclose(loaded.scores(query), brute_force_scores(corpus, query, 1.2), rtol=0, atol=1e-12)


def test_index_for_another_corpus_is_refused(tmp_path) -> None:
    path = CandidateIndex.from_corpus([[1, 2], [3]]).save(tmp_path / "candidates.npz")
    with pytest.raises(ValueError, match="built for another corpus"):
        CandidateIndex.load(path, expected_fingerprint=corpus_fingerprint([[1], [2, 3]]))


def test_fingerprint_depends_on_tokens_and_document_boundaries() -> None:
    base = corpus_fingerprint([[1, 2], [3]])
    assert base == corpus_fingerprint([np.array([1, 2], dtype=np.int32), (3,)])
    assert base != corpus_fingerprint([[1], [2, 3]])
    assert base != corpus_fingerprint([[1, 2], [4]])
    assert base != corpus_fingerprint([[1, 2], [3], []])


def test_load_refuses_other_files(tmp_path) -> None:
    path = tmp_path / "other.npz"
    np.savez(path, scores=np.zeros(3))
    with pytest.raises(ValueError, match="not a candidate index"):
        CandidateIndex.load(path, expected_fingerprint="")
    with pytest.raises(FileNotFoundError, match="no candidate index"):
        CandidateIndex.load(tmp_path / "missing.npz", expected_fingerprint="")


def test_empty_corpus_and_empty_query_are_errors() -> None:
    with pytest.raises(ValueError, match="no documents"):
        CandidateIndex.from_corpus([])
    index = CandidateIndex.from_corpus([[1, 2]])
    with pytest.raises(ValueError, match="query 0 has no tokens"):
        index.scores([])
    with pytest.raises(ValueError, match="query 1 has no tokens"):
        index.top_batch([[1], []], 1)
    assert index.scores_batch([]).shape == (0, 1)


def test_bad_token_ids_and_arguments_are_errors() -> None:
    with pytest.raises(ValueError, match="negative token id"):
        CandidateIndex.from_corpus([[1, -2]])
    with pytest.raises(ValueError, match="integer token ids"):
        CandidateIndex.from_corpus([[1.0, 2.0]])
    with pytest.raises(ValueError, match="outside vocab_size=5"):
        CandidateIndex.from_corpus([[1, 5]], vocab_size=5)
    index = CandidateIndex.from_corpus([[1, 2]])
    with pytest.raises(ValueError, match="negative token id"):
        index.scores([-1])
    with pytest.raises(ValueError, match="n must be at least 1"):
        index.top([1], 0)


def test_vocab_size_defaults_to_largest_id_plus_one() -> None:
    assert CandidateIndex.from_corpus([[4, 0], [7]]).vocab_size == 8
    assert CandidateIndex.from_corpus([[4, 0], [7]], vocab_size=100).idf.shape == (100,)


def test_query_tokens_are_prompt_then_completion() -> None:
    query = QueryInfo(index=0, query_id="q", prompt="a", completion="b", prompt_ids=[5, 6], completion_ids=[7])
    assert query_token_ids(query) == [5, 6, 7]
