"""Which training sequences a score pass covers: all of them, the BM25 candidates of each query (paper
sec. 3.2.1), or the top of a gradient index's ranking (re-scored exactly: the paper's recipe for outliers)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from wherefrom.data.corpus import TrainingSequence
from wherefrom.data.queries import Query
from wherefrom.errors import WherefromError
from wherefrom.scoring import candidates


def bm25_rows(sequences: list[TrainingSequence], queries: list[Query], n: int, cache_folder: Path | None) -> list[int]:
    """The union over queries of each query's ``n`` best sequences by the modified BM25 (eq. 28-29), in row order.

    The sparse index is built once per corpus and kept in ``cache_folder`` (the run folder), keyed by the
    corpus's fingerprint, so later queries over the same corpus reuse it.
    """
    if n < 1:
        raise WherefromError(f"--candidates must be at least 1, got {n}.")
    corpus = [s.input_ids for s in sequences]
    fingerprint = candidates.corpus_fingerprint(corpus)
    path = None if cache_folder is None else cache_folder / f"bm25-{fingerprint[:16]}.npz"
    if path is not None and path.is_file():
        index = candidates.CandidateIndex.load(path, fingerprint)
    else:
        index = candidates.CandidateIndex.from_corpus(corpus)
        if path is not None:
            index.save(path)
    top = index.top_batch([list(q.prompt_ids) + list(q.completion_ids) for q in queries], n)
    return sorted(set(np.unique(top).tolist()))


def top_rows(scores: torch.Tensor, n: int) -> list[int]:
    """The union over queries (rows of ``scores`` [Q, N]) of each query's ``n`` highest-scoring columns."""
    if n < 1:
        raise WherefromError(f"--rescore must be at least 1, got {n}.")
    top = torch.topk(scores, min(n, scores.shape[1]), dim=1).indices
    return sorted(set(top.flatten().tolist()))
