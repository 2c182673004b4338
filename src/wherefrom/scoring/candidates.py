"""Candidate filtering (paper sec. 3.2.1, eq. 28-29): a cheap lexical pre-filter before influence scoring.

The paper ranks training sequences for each query with a modified BM25 over token ids, in which a term counts
only by its presence:

    score(Q, D) = sum over distinct tokens t of Q of  [(k1 + 1) x_t(D) / (k1 + x_t(D))] * IDF(t)
    x_t(D)      = 1 if token t occurs in document D, else 0
    IDF(t)      = log((C - n_t + 0.5) / (n_t + 0.5) + 1)

with k1 = 1.5, C the number of documents and n_t the number of documents containing t. Documents are the
training sequences (one score column each) as the model's own token ids; a query's tokens are its prompt token
ids followed by its completion token ids (see :func:`query_token_ids`). With binary x_t the bracket equals 1
wherever t is present; it is kept explicit so the code reads like eq. 28.

The index is built once from the corpus (:meth:`CandidateIndex.from_corpus`), saved with :meth:`CandidateIndex.save`
as a plain ``.npz`` (no pickled objects) and reloaded with :meth:`CandidateIndex.load`, which refuses an index
built for another corpus by comparing :func:`corpus_fingerprint` values.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from wherefrom.fileio import atomic_write
from wherefrom.scoring.results import QueryInfo

K1 = 1.5  # the paper's BM25 saturation constant
FORMAT_VERSION = 1
_CHUNK_DOCUMENTS = 4096  # documents turned into index rows per vectorized step while building

TokenIds = Sequence[int] | np.ndarray


def query_token_ids(query: QueryInfo) -> list[int]:
    """The tokens a query is matched on: its prompt token ids followed by its completion token ids."""
    return list(query.prompt_ids) + list(query.completion_ids)


def corpus_fingerprint(corpus: Iterable[TokenIds]) -> str:
    """sha256 (hex) of a corpus's token ids and its split into documents; equal only for identical corpora."""
    hasher = _CorpusHasher()
    for lengths, tokens in _chunks(corpus):
        hasher.update(lengths, tokens)
    return hasher.hexdigest()


class CandidateIndex:
    """Binary document-term matrix of a corpus and its IDF vector, for eq. 28-29 scores of many queries.

    ``term_weights[d, t]`` holds the BM25 bracket (k1+1)·x_t(d)/(k1+x_t(d)) (stored only where x_t(d) = 1);
    ``idf[t]`` holds IDF(t) for every token id below ``vocab_size``.
    """

    def __init__(self, term_weights: sp.csr_matrix, idf: np.ndarray, k1: float, fingerprint: str) -> None:
        self.term_weights = term_weights
        self.idf = idf
        self.k1 = k1
        self.fingerprint = fingerprint

    @property
    def n_documents(self) -> int:
        return self.term_weights.shape[0]

    @property
    def vocab_size(self) -> int:
        return self.term_weights.shape[1]

    @classmethod
    def from_corpus(cls, corpus: Iterable[TokenIds], vocab_size: int | None = None, k1: float = K1) -> CandidateIndex:
        """Index a corpus: one document per token-id sequence, in order (row d = document d).

        ``vocab_size`` defaults to the largest token id + 1; pass the tokenizer's size to keep ids explicit.
        """
        if k1 < 0:
            raise ValueError(f"k1 must be >= 0 (the paper uses {K1}); got {k1}")
        hasher = _CorpusHasher()
        blocks = []
        for lengths, tokens in _chunks(corpus):
            hasher.update(lengths, tokens)
            blocks.append(_presence_block(lengths, tokens))
        if not blocks:
            raise ValueError("the corpus holds no documents: give at least one token-id sequence to index")
        largest = max(int(indices.max(initial=-1)) for _, _, indices in blocks)
        if vocab_size is None:
            vocab_size = largest + 1
        elif largest >= vocab_size:
            raise ValueError(f"the corpus holds token id {largest}, outside vocab_size={vocab_size}; "
                             "pass the tokenizer's vocabulary size or leave vocab_size unset")
        presence = sp.vstack([sp.csr_matrix((np.ones(len(indices)), indices, indptr), shape=(n_rows, vocab_size))
                              for n_rows, indptr, indices in blocks], format="csr")
        return cls._from_presence(presence, k1, hasher.hexdigest())

    def scores(self, query: TokenIds) -> np.ndarray:
        """Eq. 28 score of every document for one query's token ids (prompt + completion): float64 [C]."""
        return self.scores_batch([query])[0]

    def scores_batch(self, queries: Sequence[TokenIds]) -> np.ndarray:
        """Eq. 28 scores for many queries with one sparse product: float64 [n_queries, C]."""
        rows, cols = [], []
        for q, query in enumerate(queries):
            tokens = _token_array(query, f"query {q}")
            if tokens.size == 0:
                raise ValueError(f"query {q} has no tokens: a query is matched on its prompt + completion token ids")
            distinct = np.unique(tokens)
            distinct = distinct[distinct < self.vocab_size]  # ids the corpus never holds add nothing (x_t = 0)
            rows.append(np.full(len(distinct), q))
            cols.append(distinct)
        if not rows:
            return np.zeros((0, self.n_documents))
        rows_all, cols_all = np.concatenate(rows), np.concatenate(cols)
        query_idf = sp.csr_matrix((self.idf[cols_all], (rows_all, cols_all)), shape=(len(queries), self.vocab_size))
        return np.ascontiguousarray((self.term_weights @ query_idf.T).toarray().T)

    def top(self, query: TokenIds, n: int) -> np.ndarray:
        """Rows of the n best-scoring documents for one query, best first, ties broken by lower row."""
        return self.top_batch([query], n)[0]

    def top_batch(self, queries: Sequence[TokenIds], n: int) -> np.ndarray:
        """Rows of the n best documents per query: int64 [n_queries, min(n, C)], best first, ties by lower row."""
        if n < 1:
            raise ValueError(f"n must be at least 1 (the number of candidates to keep per query); got {n}")
        scores = self.scores_batch(queries)
        kept = min(n, self.n_documents)
        return np.array([_top_rows(row, kept) for row in scores], dtype=np.int64).reshape(len(scores), kept)

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the index to ``path`` (an uncompressed .npz of plain arrays), atomically."""
        path = Path(path)
        arrays = {
            "format_version": np.array(FORMAT_VERSION),
            "indptr": self.term_weights.indptr,
            "indices": self.term_weights.indices,
            "shape": np.array(self.term_weights.shape, dtype=np.int64),
            "k1": np.array(self.k1, dtype=np.float64),
            "fingerprint": np.array(self.fingerprint),
        }

        def write(target: Path) -> None:
            with open(target, "wb") as handle:
                np.savez(handle, **arrays)

        atomic_write(path, write)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike[str], expected_fingerprint: str) -> CandidateIndex:
        """Read an index written by :meth:`save`, refusing one built for a corpus other than the expected one.

        ``expected_fingerprint`` is :func:`corpus_fingerprint` of the corpus the index must describe.
        """
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"no candidate index at {path}: build one with "
                                    "CandidateIndex.from_corpus(...).save(path)")
        with np.load(path, allow_pickle=False) as stored:
            missing = {"format_version", "indptr", "indices", "shape", "k1", "fingerprint"} - set(stored.files)
            if missing or int(stored["format_version"]) != FORMAT_VERSION:
                raise ValueError(f"{path} is not a candidate index of format {FORMAT_VERSION}; rebuild it with "
                                 "CandidateIndex.from_corpus(...).save(path)")
            fingerprint = str(stored["fingerprint"])
            if fingerprint != expected_fingerprint:
                raise ValueError(f"the candidate index at {path} was built for another corpus (fingerprint "
                                 f"{fingerprint[:16]}…, expected {expected_fingerprint[:16]}…); delete it and "
                                 "rebuild it from the current corpus with CandidateIndex.from_corpus(...).save(path)")
            indices, indptr = stored["indices"], stored["indptr"]
            shape = (int(stored["shape"][0]), int(stored["shape"][1]))
            presence = sp.csr_matrix((np.ones(len(indices)), indices, indptr), shape=shape)
            return cls._from_presence(presence, float(stored["k1"]), fingerprint)

    @classmethod
    def _from_presence(cls, presence: sp.csr_matrix, k1: float, fingerprint: str) -> CandidateIndex:
        """Eq. 28-29 weights from the binary matrix x_t(D) (1.0 where token t occurs in document D)."""
        n_documents = presence.shape[0]
        containing = np.bincount(presence.indices, minlength=presence.shape[1])  # n_t
        idf = np.log((n_documents - containing + 0.5) / (containing + 0.5) + 1.0)
        x = presence.data
        bracket = (k1 + 1.0) * x / (k1 + x)
        term_weights = sp.csr_matrix((bracket, presence.indices, presence.indptr), shape=presence.shape)
        return cls(term_weights, idf, k1, fingerprint)


class _CorpusHasher:
    """sha256 over the documents' lengths and, separately, their concatenated token ids (both int64 LE)."""

    def __init__(self) -> None:
        self._lengths = hashlib.sha256()
        self._tokens = hashlib.sha256()

    def update(self, lengths: np.ndarray, tokens: np.ndarray) -> None:
        self._lengths.update(lengths.astype("<i8").tobytes())
        self._tokens.update(tokens.astype("<i8").tobytes())

    def hexdigest(self) -> str:
        combined = hashlib.sha256(b"wherefrom candidate corpus v1")
        combined.update(self._lengths.digest())
        combined.update(self._tokens.digest())
        return combined.hexdigest()


def _token_array(sequence: TokenIds, what: str) -> np.ndarray:
    """A token-id sequence as a 1-D int64 array, checked for integer, non-negative ids."""
    array = np.asarray(sequence)
    if array.size == 0:
        return np.zeros(0, dtype=np.int64)
    if array.ndim != 1 or not np.issubdtype(array.dtype, np.integer):
        raise ValueError(f"{what} must be a flat sequence of integer token ids; got dtype {array.dtype}, "
                         f"shape {array.shape}")
    if array.min() < 0:
        raise ValueError(f"{what} holds a negative token id ({array.min()}); token ids start at 0")
    return array.astype(np.int64, copy=False)


def _chunks(corpus: Iterable[TokenIds]) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """The corpus in blocks of documents: (lengths [n_docs], concatenated token ids), both int64."""
    block: list[np.ndarray] = []
    for d, document in enumerate(corpus):
        block.append(_token_array(document, f"document {d}"))
        if len(block) == _CHUNK_DOCUMENTS:
            yield np.array([len(b) for b in block], dtype=np.int64), np.concatenate(block)
            block = []
    if block:
        yield np.array([len(b) for b in block], dtype=np.int64), np.concatenate(block)


def _presence_block(lengths: np.ndarray, tokens: np.ndarray) -> tuple[int, np.ndarray, np.ndarray]:
    """CSR structure (n_rows, indptr, sorted column indices) of x_t(D) for one block of documents."""
    n_rows = len(lengths)
    rows = np.repeat(np.arange(n_rows, dtype=np.int64), lengths)
    stride = int(tokens.max(initial=0)) + 1
    present = np.unique(rows * stride + tokens)  # distinct (document, token) pairs, row-major
    indptr = np.zeros(n_rows + 1, dtype=np.int64)
    np.cumsum(np.bincount(present // stride, minlength=n_rows), out=indptr[1:])
    return n_rows, indptr, present % stride


def _top_rows(scores: np.ndarray, n: int) -> np.ndarray:
    """Indices of the n largest scores, best first; among equal scores the lower index comes first."""
    if n < len(scores):
        nth_best = np.partition(scores, len(scores) - n)[len(scores) - n]
        above = np.flatnonzero(scores > nth_best)
        tied = np.flatnonzero(scores == nth_best)[: n - len(above)]
        chosen = np.concatenate([above, tied])
    else:
        chosen = np.arange(len(scores))
    return chosen[np.lexsort((chosen, -scores[chosen]))]
