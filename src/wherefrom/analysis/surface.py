"""Surface overlap between a query and training sequences (Grosse et al. 2023, sec. 5.1 and 5.3.2).

The paper measures how much the most influential sequences share the query's *words*: its modified BM25
(eq. 28-29, scoring/candidates.py) with each term counted only by its presence,

    BM25(q, z) = sum over distinct terms t of q present in z of IDF(t),   IDF(t) = log((C - n_t + 0.5) / (n_t + 0.5) + 1)

(the bracket (k1 + 1) x_t / (k1 + x_t) is 1 where t is present). Here the terms are the lower-cased words
(``\\w+``) of the texts, not a model's tokens, so that models with different tokenizers are measured on the
same terms. C is the number of sequences and n_t the number holding t.

A *content word* is a word that is not in :data:`STOPWORDS` (English and French function words). A sequence
shares no content word with the query when the two sets of content words are disjoint; the share of positive
influence such sequences carry is

    disjoint share(q) = sum over z disjoint from q of max(I(z, q), 0) / sum over all z of max(I(z, q), 0).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

from wherefrom.scoring.candidates import CandidateIndex

_WORD = re.compile(r"\w+")
STOPWORDS = frozenset("""
a an the and or but if of to in on at by for with from as is are was were be been being it its this that these
those there their they them he she his her we you your our i me my not no so than then too very can will would
should could do does did has have had what which who whom whose when where why how all any each some such into
onto over under about after before between through during out up down off again also just only own same
le la les l un une des du de d et ou mais si à au aux en dans sur par pour avec sans est sont était ce cet cette
ces il elle ils elles on nous vous je tu qui que qu quoi dont où ne pas se sa son ses leur leurs y
""".split())


def words(text: str) -> list[str]:
    """The lower-cased words of ``text`` (runs of letters, digits and underscores), in order."""
    return _WORD.findall(text.lower())


def content_words(text: str) -> frozenset[str]:
    """The distinct words of ``text`` that are not function words."""
    return frozenset(w for w in words(text) if w not in STOPWORDS)


class WordBM25:
    """The paper's BM25 over the words of a fixed set of sequences (one document each, in column order)."""

    def __init__(self, texts: Sequence[str]) -> None:
        self._vocabulary: dict[str, int] = {}
        documents = [[self._vocabulary.setdefault(w, len(self._vocabulary)) for w in words(t)] for t in texts]
        self._index = CandidateIndex.from_corpus(documents, vocab_size=max(1, len(self._vocabulary)))

    def scores(self, query: str) -> np.ndarray:
        """BM25(query, z) of every sequence z (float64 [C]); 0 for every z when the
        query has no word the texts hold."""
        ids = [self._vocabulary[w] for w in words(query) if w in self._vocabulary]
        if not ids:
            return np.zeros(self._index.n_documents)
        return self._index.scores(ids)


def disjoint_share(scores: np.ndarray, disjoint: np.ndarray) -> float:
    """Share of the positive influence carried by the sequences marked ``disjoint``; NaN with no positive score."""
    positive = np.clip(np.asarray(scores, dtype=np.float64), 0.0, None)
    total = positive.sum()
    return float(positive[disjoint].sum() / total) if total > 0.0 else float("nan")
