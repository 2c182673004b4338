"""Verbatim occurrences and longest shared spans against brute-force search."""

import numpy as np
import pytest
import torch

from wherefrom.analysis.memorisation import CorpusIndex, find_memorisation, shared_spans


def common_length(a: list[int], b: list[int], i: int, j: int) -> int:
    """Length of the common run starting at a[i] and b[j]."""
    n = 0
    while i + n < len(a) and j + n < len(b) and a[i + n] == b[j + n]:
        n += 1
    return n


def brute_longest(completion: list[int], sequence: list[int]) -> int:
    return max(
        (common_length(completion, sequence, c, s) for c in range(len(completion)) for s in range(len(sequence))),
        default=0,
    )


def random_corpus(seed: int, plant: bool = True) -> tuple[list[int], list[list[int]]]:
    """Small vocabulary so that spans of several tokens are shared; the completion is planted in two rows."""
    rng = np.random.default_rng(seed)
    completion = rng.integers(0, 4, 9).tolist()
    corpus = [rng.integers(0, 4, rng.integers(0, 40)).tolist() for _ in range(30)]
    if plant:
        corpus[7] = corpus[7][:5] + completion + corpus[7][5:]
        corpus[19] = completion + corpus[19]
    return completion, corpus


def brute_longest_occurrences(completion: list[int], corpus: list[list[int]]) -> tuple[int, list[tuple[int, int, int]]]:
    """Longest shared length and every (row, start, completion_start) where a span of that length occurs."""
    longest = max(brute_longest(completion, seq) for seq in corpus)
    occurrences = {
        (r, s, c)
        for r, seq in enumerate(corpus)
        for s in range(len(seq))
        for c in range(len(completion))
        if common_length(completion, seq, c, s) >= longest
    }
    return longest, sorted(occurrences)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_per_sequence_longest_span_matches_brute_force(seed):
    completion, corpus = random_corpus(seed)
    spans = shared_spans(completion, corpus)
    assert [s.row for s in spans] == list(range(len(corpus)))
    for span, sequence in zip(spans, corpus, strict=True):
        assert span.length == brute_longest(completion, sequence)
        window = sequence[span.start : span.start + span.length]
        assert window == completion[span.completion_start : span.completion_start + span.length]
        assert list(span.span) == window


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_corpus_search_matches_brute_force(seed):
    completion, corpus = random_corpus(seed)
    corpus[3] = [9, 9] + completion[:-1]  # all but the last token: not verbatim
    found = CorpusIndex(corpus).search(np.array(completion))
    m = len(completion)
    verbatim = {(r, s) for r, seq in enumerate(corpus) for s in range(len(seq)) if seq[s : s + m] == completion}
    assert set(found.verbatim) == verbatim and len(found.verbatim) == len(verbatim)
    assert {(7, 5), (19, 0)} <= verbatim
    longest, occurrences = brute_longest_occurrences(completion, corpus)
    assert found.longest_length == longest == m
    assert [(s.row, s.start, s.completion_start) for s in found.longest] == occurrences


@pytest.mark.parametrize("seed", [3, 4, 5, 6])
def test_longest_occurrences_without_planting_match_brute_force(seed):
    completion, corpus = random_corpus(seed, plant=False)
    found = find_memorisation(completion, corpus)
    longest, occurrences = brute_longest_occurrences(completion, corpus)
    assert 0 < found.longest_length == longest < len(completion)
    assert [(s.row, s.start, s.completion_start) for s in found.longest] == occurrences
    assert found.verbatim == ()


def test_longest_span_without_verbatim_occurrence():
    corpus = [[5, 1, 2, 3, 8], [1, 2, 9, 2, 3, 4], [7, 7]]
    found = find_memorisation([1, 2, 3, 4], corpus)
    assert found.verbatim == ()
    assert found.longest_length == 3
    assert [(s.row, s.start, s.completion_start, s.span) for s in found.longest] == [
        (0, 1, 0, (1, 2, 3)),
        (1, 3, 1, (2, 3, 4)),
    ]
    assert [s.length for s in shared_spans([1, 2, 3, 4], corpus)] == [3, 3, 0]


def test_spans_do_not_cross_sequence_boundaries():
    found = find_memorisation([2, 3], [[1, 2], [3, 4]])
    assert found.longest_length == 1
    assert found.verbatim == ()


def test_text_is_compared_character_by_character():
    found = find_memorisation("the cat sat", ["a cat sat down", "the cat sat", "xx the cat sat"])
    assert found.verbatim == ((1, 0), (2, 3))
    assert found.longest[0].span == "the cat sat"
    spans = shared_spans("hello", ["yellow", "nope", ""])
    assert [(s.length, s.span, s.start) for s in spans] == [(4, "ello", 1), (1, "e", 3), (0, "", 0)]


def test_index_accepts_tensors_and_is_reusable():
    index = CorpusIndex([torch.tensor([4, 5, 6]), np.array([6, 4, 5])])
    assert index.search(torch.tensor([4, 5])).verbatim == ((0, 0), (1, 1))
    assert index.search([6]).verbatim == ((0, 2), (1, 0))


def test_bad_inputs_are_clear_errors():
    with pytest.raises(ValueError, match="no sequences"):
        CorpusIndex([])
    index = CorpusIndex([[1, 2, 3]])
    with pytest.raises(ValueError, match="empty"):
        index.search([])
    with pytest.raises(ValueError, match="both as text or both as ids"):
        index.search("abc")
    with pytest.raises(ValueError, match="negative token id"):
        CorpusIndex([[1, -2]])
    with pytest.raises(ValueError, match="1-D"):
        index.shared_spans([[1, 2]])
