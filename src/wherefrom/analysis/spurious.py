"""Spurious sequences: influence carried by very few tokens (Grosse et al. 2023, sec. 5.2).

For a sequence's per-token influence vector a, the ratio ||a||_2 / ||a||_1 lies in [1/sqrt(len(a)), 1]: it is 1
when a single token carries all of the influence and 1/sqrt(len(a)) when every token carries the same amount.
The paper flags a sequence as spurious when the ratio exceeds 2/3.

That rule alone fires on most short sequences, and on a fact's carriers, whose influence rightly sits on the
tokens that state the answer: per-token influence is heavy-tailed, so few tokens carry most of it almost
everywhere. :func:`concentration_p_values` calibrates the ratio against the scored corpus: the share of random
draws of as many tokens from all of the query's per-token influences (the corpus pooled) whose ratio is as high.
`spurious_sequences` flags a sequence when the paper's rule holds *and* that share is at most 1%: its
influence is more concentrated than same-length token sets of this corpus usually are.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from wherefrom.analysis._arrays import as_numpy
from wherefrom.scoring.results import ScoreResult

SPURIOUS_THRESHOLD = 2.0 / 3.0
SPURIOUS_LEVEL = 0.01  # flag when at most this share of same-length corpus token draws are as concentrated
NULL_DRAWS = 1000  # random token sets per query and sequence length


@dataclass(frozen=True)
class SpuriousSequence:
    """A sequence whose influence on a query sits in few tokens."""

    query: int
    row: int
    ratio: float  # ||a||_2 / ||a||_1 of its per-token influence on the query
    p_value: float = float("nan")  # share of same-length corpus token draws as concentrated (NaN: not calibrated)


def token_norm_ratios(per_token: Any, token_offsets: Any) -> np.ndarray:
    """||a||_2 / ||a||_1 of every sequence's per-token influence, shape [n_queries, n_sequences].

    ``per_token`` is [n_queries, n_tokens_total] (or one query's [n_tokens_total]); sequence n owns the slice
    ``token_offsets[n]:token_offsets[n+1]``. A sequence whose tokens all carry zero influence gets NaN.
    """
    tokens = np.atleast_2d(as_numpy(per_token))
    offsets = as_numpy(token_offsets, dtype=np.int64)
    if offsets.ndim != 1 or offsets.size < 2 or offsets[0] != 0 or np.any(np.diff(offsets) < 0):
        raise ValueError("token_offsets must be a non-decreasing 1-D array starting at 0 with n_sequences + 1 entries")
    if offsets[-1] != tokens.shape[1]:
        raise ValueError(
            f"token_offsets ends at {offsets[-1]} but per_token holds {tokens.shape[1]} tokens per query; "
            "pass the offsets saved with these per-token scores"
        )
    l1 = _segment_sums(np.abs(tokens), offsets)
    l2 = np.sqrt(_segment_sums(tokens * tokens, offsets))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(l1 > 0.0, l2 / l1, np.nan)


def flag_spurious(ratios: Any, threshold: float = SPURIOUS_THRESHOLD) -> list[list[SpuriousSequence]]:
    """Per query, the sequences whose norm ratio exceeds ``threshold``, highest ratio first (NaN never flags)."""
    table = np.atleast_2d(as_numpy(ratios))
    flagged = []
    for query, row_ratios in enumerate(table):
        rows = np.flatnonzero(row_ratios > threshold)
        rows = rows[np.argsort(-row_ratios[rows], kind="stable")]
        flagged.append([SpuriousSequence(query=query, row=int(r), ratio=float(row_ratios[r])) for r in rows])
    return flagged


def concentration_p_values(per_token: Any, token_offsets: Any, rows: list[list[int]] | None = None,
                           draws: int = NULL_DRAWS, seed: int = 0, pooled: Any | None = None) -> np.ndarray:
    """For each query and sequence: the share of ``draws`` random sets of as many tokens, drawn from all of the
    query's per-token influences, whose ||a||_2 / ||a||_1 is at least the sequence's, [n_queries, n_sequences].

    Each sequence's first token (nothing predicts it, so it carries no influence) is left out of both the
    sequence and the pool. ``rows``: per query, the sequences to compute (default all); the others get NaN.
    ``pooled``: per query, the sequences whose tokens make its pool (default all; scores with
    ``--per-token-top`` have token shares only for each query's ``token_rows``). The share is
    (1 + as concentrated) / (1 + draws), so never 0.
    """
    tokens = np.atleast_2d(as_numpy(per_token))
    offsets = as_numpy(token_offsets, dtype=np.int64)
    ratios = token_norm_ratios(tokens, offsets)
    predicted = np.ones(tokens.shape[1], dtype=bool)
    predicted[offsets[:-1][np.diff(offsets) > 0]] = False  # each sequence's first token
    rng = np.random.default_rng(seed)
    shares = np.full(ratios.shape, np.nan)
    for query, values in enumerate(tokens):
        pool = np.abs(values[predicted & _token_mask(offsets, None if pooled is None else pooled[query])])
        null: dict[int, np.ndarray] = {}
        for row in range(ratios.shape[1]) if rows is None else rows[query]:
            length = int(offsets[row + 1] - offsets[row]) - 1
            if length < 1 or np.isnan(ratios[query, row]):
                continue
            if length not in null:
                sample = pool[rng.integers(0, pool.size, size=(draws, length))]
                with np.errstate(invalid="ignore", divide="ignore"):
                    null[length] = np.sqrt((sample * sample).sum(1)) / sample.sum(1)
            shares[query, row] = (1 + np.count_nonzero(null[length] >= ratios[query, row])) / (1 + draws)
    return shares


def spurious_sequences(
    result: ScoreResult, threshold: float = SPURIOUS_THRESHOLD, top_k: int | None = None,
    level: float = SPURIOUS_LEVEL,
) -> list[list[SpuriousSequence]]:
    """Spurious sequences of each query of ``result``; with ``top_k``, only among that query's top-k by score.

    Flagged: ratio above ``threshold`` (the paper's rule) and concentration p-value at most ``level`` (see
    :func:`concentration_p_values`); ``level`` 1 keeps the paper's rule alone."""
    if result.per_token is None or result.token_offsets is None:
        raise ValueError("these results hold no per-token scores; score again with per-token scores enabled")
    ratios = token_norm_ratios(result.per_token, result.token_offsets)
    rows = None if top_k is None else [result.top(query, top_k) for query in range(ratios.shape[0])]
    shares = concentration_p_values(result.per_token, result.token_offsets, rows, pooled=result.token_rows)
    calibrated = np.where(shares <= level, ratios, np.nan)  # NaN never flags
    flagged = flag_spurious(calibrated, threshold)
    return [[SpuriousSequence(s.query, s.row, s.ratio, float(shares[s.query, s.row])) for s in per_query]
            for per_query in flagged]


def _token_mask(offsets: np.ndarray, rows: Any | None) -> np.ndarray | bool:
    """Which tokens belong to the sequences ``rows`` (True for all when None)."""
    if rows is None:
        return True
    mask = np.zeros(int(offsets[-1]), dtype=bool)
    for row in np.asarray(rows, dtype=np.int64).tolist():
        mask[offsets[row]:offsets[row + 1]] = True
    return mask


def _segment_sums(values: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Sums of ``values[:, offsets[n]:offsets[n+1]]`` for every n (empty segments sum to 0)."""
    sums = np.zeros((values.shape[0], offsets.size - 1))
    nonempty = np.flatnonzero(np.diff(offsets) > 0)
    if nonempty.size:
        sums[:, nonempty] = np.add.reduceat(values, offsets[nonempty], axis=1)
    return sums
