"""Memorisation checks: does a completion occur verbatim in training sequences, and what do they share?

Sequences and completions are token ids, or text (then compared character by character). The corpus search
indexes every position by its token once (a stable argsort of the concatenated corpus); for a completion it then
walks the completion's tokens, extending the runs of matching tokens that ended one position earlier. The work is
proportional to the number of corpus positions holding one of the completion's tokens, not to the corpus size.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from wherefrom.analysis._arrays import as_numpy

_SEPARATOR = -1  # placed after every sequence so that no run crosses from one sequence into the next


@dataclass(frozen=True)
class SharedSpan:
    """A contiguous run of tokens found both in the completion and in corpus sequence ``row``.

    ``span`` holds the shared token ids, or the shared text when the inputs were text. A sequence sharing nothing
    gets a span of length 0 at starts 0.
    """

    row: int
    start: int  # position of the span's first token in the sequence
    completion_start: int  # position of the span's first token in the completion
    length: int
    span: tuple[int, ...] | str


@dataclass(frozen=True)
class Memorisation:
    """Where a completion, or the longest part of it, occurs in a corpus."""

    completion_length: int
    verbatim: tuple[tuple[int, int], ...]  # (row, start) of every occurrence of the whole completion
    longest: tuple[SharedSpan, ...]  # every occurrence of a longest shared span, ordered by row, then start

    @property
    def longest_length(self) -> int:
        """Length of the longest span the completion shares with any sequence (0 if none)."""
        return self.longest[0].length if self.longest else 0


class CorpusIndex:
    """Token-position index of a corpus of sequences, searched for completions (build once, query many times)."""

    def __init__(self, sequences: Sequence[Any]) -> None:
        if len(sequences) == 0:
            raise ValueError("the corpus holds no sequences; pass at least one sequence of token ids or text")
        self._is_text = isinstance(sequences[0], str)
        units = [_units(s, self._is_text, f"sequence {row}") for row, s in enumerate(sequences)]
        lengths = np.array([u.size for u in units], dtype=np.int64)
        self._flat = np.concatenate([np.append(u, _SEPARATOR) for u in units])
        self._row_start = np.concatenate([[0], np.cumsum(lengths + 1)[:-1]])
        self._row_of = np.repeat(np.arange(len(units)), lengths + 1)
        self._order = np.argsort(self._flat, kind="stable")  # positions of each token, ascending within a token
        self._sorted = self._flat[self._order]

    @property
    def n_sequences(self) -> int:
        """Number of sequences in the corpus."""
        return self._row_start.size

    def shared_spans(self, completion: Any) -> list[SharedSpan]:
        """The longest span each sequence shares with ``completion``, one per row (the first found on ties)."""
        units = self._completion_units(completion)
        best_length = np.zeros(self.n_sequences, dtype=np.int64)
        best_end = np.zeros(self.n_sequences, dtype=np.int64)
        best_completion_end = np.zeros(self.n_sequences, dtype=np.int64)
        for i, positions, lengths in self._runs(units):
            rows = self._row_of[positions]
            order = np.lexsort((positions, -lengths, rows))
            rows, positions, lengths = rows[order], positions[order], lengths[order]
            first_of_row = np.diff(rows, prepend=-1) != 0
            rows, positions, lengths = rows[first_of_row], positions[first_of_row], lengths[first_of_row]
            better = lengths > best_length[rows]
            best_length[rows[better]] = lengths[better]
            best_end[rows[better]] = positions[better]
            best_completion_end[rows[better]] = i
        spans = []
        for row in range(self.n_sequences):
            length = int(best_length[row])
            if length == 0:
                spans.append(SharedSpan(row=row, start=0, completion_start=0, length=0, span=self._span(units[:0])))
            else:
                spans.append(self._shared_span(units, int(best_completion_end[row]), int(best_end[row]), length))
        return spans

    def search(self, completion: Any) -> Memorisation:
        """Every verbatim occurrence of ``completion`` and every occurrence of its longest shared span."""
        units = self._completion_units(completion)
        longest_length = 0
        longest_ends: list[tuple[int, np.ndarray]] = []
        verbatim: list[tuple[int, int]] = []
        for i, positions, lengths in self._runs(units):
            step_longest = int(lengths.max(initial=0))
            if step_longest > longest_length:
                longest_length, longest_ends = step_longest, []
            if step_longest == longest_length and step_longest > 0:
                longest_ends.append((i, positions[lengths == step_longest]))
            if i == units.size - 1:
                verbatim = [self._locate(p - units.size + 1) for p in positions[lengths == units.size]]
        spans = [
            self._shared_span(units, i, int(end), longest_length) for i, ends in longest_ends for end in ends
        ]
        spans.sort(key=lambda s: (s.row, s.start, s.completion_start))
        return Memorisation(completion_length=int(units.size), verbatim=tuple(verbatim), longest=tuple(spans))

    def _completion_units(self, completion: Any) -> np.ndarray:
        units = _units(completion, self._is_text, "the completion")
        if units.size == 0:
            raise ValueError("the completion is empty; pass at least one token (or character)")
        return units

    def _runs(self, units: np.ndarray) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
        """For each completion position i: the corpus positions p holding units[i] (ascending) and the length of
        the common run ending at (i, p), i.e. the largest L with units[i-L+1:i+1] == corpus[p-L+1:p+1]."""
        previous_positions = np.empty(0, dtype=np.int64)
        previous_lengths = np.empty(0, dtype=np.int64)
        for i, unit in enumerate(units):
            lo, hi = np.searchsorted(self._sorted, unit, "left"), np.searchsorted(self._sorted, unit, "right")
            positions = self._order[lo:hi]
            lengths = np.ones(positions.size, dtype=np.int64)
            if previous_positions.size:
                found = np.minimum(np.searchsorted(previous_positions, positions - 1), previous_positions.size - 1)
                continues = previous_positions[found] == positions - 1
                lengths[continues] += previous_lengths[found[continues]]
            yield i, positions, lengths
            previous_positions, previous_lengths = positions, lengths

    def _shared_span(self, units: np.ndarray, completion_end: int, corpus_end: int, length: int) -> SharedSpan:
        row, start = self._locate(corpus_end - length + 1)
        completion_start = completion_end - length + 1
        return SharedSpan(
            row=row,
            start=start,
            completion_start=completion_start,
            length=length,
            span=self._span(units[completion_start : completion_end + 1]),
        )

    def _locate(self, flat_position: int) -> tuple[int, int]:
        row = int(self._row_of[flat_position])
        return row, int(flat_position - self._row_start[row])

    def _span(self, units: np.ndarray) -> tuple[int, ...] | str:
        if self._is_text:
            return "".join(map(chr, units.tolist()))
        return tuple(units.tolist())


def find_memorisation(completion: Any, sequences: Sequence[Any]) -> Memorisation:
    """Verbatim occurrences and the longest shared spans of ``completion`` in ``sequences`` (one-off search)."""
    return CorpusIndex(sequences).search(completion)


def shared_spans(completion: Any, sequences: Sequence[Any]) -> list[SharedSpan]:
    """The longest span ``completion`` shares with each of ``sequences`` (one-off search)."""
    return CorpusIndex(sequences).shared_spans(completion)


def _units(value: Any, is_text: bool, what: str) -> np.ndarray:
    """Token ids (or the code points of text) as a 1-D int64 array."""
    if isinstance(value, str) != is_text:
        kinds = ("text", "token ids") if is_text else ("token ids", "text")
        raise ValueError(f"the corpus holds {kinds[0]} but {what} is {kinds[1]}: pass both as text or both as ids")
    if is_text:
        return np.frombuffer(value.encode("utf-32-le"), dtype="<u4").astype(np.int64)
    units = as_numpy(value, dtype=np.int64)
    if units.ndim != 1:
        raise ValueError(f"{what} must be a 1-D sequence of token ids, got shape {units.shape}")
    if units.size and units.min() < 0:
        raise ValueError(f"{what} holds a negative token id ({units.min()}); token ids must be >= 0")
    return units

