"""Turn corpus records into training sequences: truncated records, or packed fixed-length blocks."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from wherefrom.data.records import Record, check_vocabulary
from wherefrom.errors import WherefromError


@dataclass(frozen=True)
class TrainingSequence:
    """One training sequence (a column of the score matrix) and where it came from."""

    row: int
    record_id: str
    start: int  # token offset into the record (for packed blocks: into the first record)
    end: int
    input_ids: tuple[int, ...]


def build_sequences(records: list[Record], tokenizer: object, max_length: int, pack: bool) -> list[TrainingSequence]:
    """Tokenize records and cut them into training sequences of at most ``max_length`` tokens.

    Without packing each record is one sequence, truncated to ``max_length``; with packing records are joined
    (EOS between them) and cut into blocks, each keeping the ids of the records it spans (joined by '+').
    Sequences of fewer than two tokens predict nothing and are dropped.
    """
    if max_length < 2:
        raise WherefromError(f"--max-length must be at least 2 tokens, got {max_length}.")
    token_lists = _tokenize(records, tokenizer)
    pieces = _packed(records, token_lists, tokenizer, max_length) if pack else [
        (r.id, 0, ids[:max_length]) for r, ids in zip(records, token_lists)
    ]
    sequences = [
        TrainingSequence(row, rid, start, start + len(ids), tuple(ids))
        for row, (rid, start, ids) in enumerate(p for p in pieces if len(p[2]) >= 2)
    ]
    if not sequences:
        raise WherefromError("the corpus yields no training sequence of two or more tokens.")
    return sequences


def corpus_fingerprint(sequences: list[TrainingSequence]) -> str:
    """A hash of every sequence's tokens and record id: equal fingerprints mean the same training data."""
    h = hashlib.sha256()
    for s in sequences:
        h.update(f"{s.record_id}:{s.start}:".encode())
        h.update(",".join(map(str, s.input_ids)).encode())
        h.update(b";")
    return h.hexdigest()[:16]


def _tokenize(records: list[Record], tokenizer: object) -> list[list[int]]:
    texts = [r.text for r in records if r.input_ids is None]
    encoded = iter(tokenizer(texts, add_special_tokens=True)["input_ids"]) if texts else iter(())
    vocabulary = len(tokenizer)  # type: ignore[arg-type]
    for r in records:
        if r.input_ids is not None:
            check_vocabulary(r.input_ids, vocabulary, f"corpus record {r.id}", "input_ids")
    return [list(r.input_ids) if r.input_ids is not None else list(next(encoded)) for r in records]


def _packed(records: list[Record], token_lists: list[list[int]], tokenizer: object,
            max_length: int) -> list[tuple[str, int, list[int]]]:
    eos = getattr(tokenizer, "eos_token_id", None)
    stream: list[int] = []
    owners: list[tuple[int, int]] = []  # (record index, offset within record) per token of the stream
    for index, ids in enumerate(token_lists):
        stream.extend(ids)
        owners.extend((index, offset) for offset in range(len(ids)))
        if eos is not None:
            stream.append(eos)
            owners.append((index, len(ids)))
    blocks = []
    for lo in range(0, len(stream), max_length):
        span = owners[lo:lo + max_length]
        ids_in_block = dict.fromkeys(records[i].id for i, _ in span)
        blocks.append(("+".join(ids_in_block), span[0][1], stream[lo:lo + max_length]))
    return blocks
