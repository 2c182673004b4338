"""ScoreResults built in code for the report tests: known scores, hostile texts, optional decompositions.

Scores are heavy-tailed (Pareto) so that the tail fit runs; each sequence's per-token scores sum to its score and
its per-layer scores sum to its score, as in real results.
"""

from __future__ import annotations

import numpy as np
import torch

from wherefrom.scoring.results import QueryInfo, ScoreResult, SequenceInfo

SCRIPT = "<script>alert(1)</script>"
BOLD = "<b>bold</b>"
HOSTILE_ID = "<img src=x onerror=alert(2)>"
HOSTILE_PIECES = ["<bos>", "a note: ", SCRIPT, " and ", BOLD, " & \"quotes\" {{ not_jinja }}"]
CAPITAL_PIECES = ["<bos>", "paris", " is", " the", " capital", " of", " france", "."]
WORDS = ["the", " cat", " sat", " on", " a", " mat", " dogs", " run", " fast", ".", " birds", " sing"]
SPURIOUS_ROW = 2  # all of its influence on query 0 sits in one token


def synthetic_result(n_sequences: int = 300, n_layers: int = 30, per_layer: bool = True, per_token: bool = True,
                     seed: int = 0) -> ScoreResult:
    """Three queries over ``n_sequences`` sequences; row 0 (the hostile document) is query 0's top sequence and
    row 1 contains query 0's completion verbatim."""
    rng = np.random.default_rng(seed)
    pieces = [HOSTILE_PIECES, CAPITAL_PIECES]
    pieces += [["<bos>"] + list(rng.choice(WORDS, rng.integers(4, 12))) for _ in range(n_sequences - 2)]
    n_queries = 3
    scores = rng.pareto(1.5, size=(n_queries, n_sequences)) + 0.05
    scores[:, ::7] *= -1.0  # some negative scores
    scores[0, 0] = 2.0 * np.abs(scores[0]).max()
    scores[0, SPURIOUS_ROW] = 0.75 * scores[0, 0]  # query 0's second sequence
    lengths = np.array([len(p) for p in pieces])
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    weights = []
    for row, length in enumerate(lengths):
        w = np.zeros((n_queries, length))
        w[:, 1:] = rng.normal(1.0, 1.0, size=(n_queries, length - 1))
        if row == SPURIOUS_ROW:
            w[0, 1:] = 0.0
            w[0, -1] = 1.0
        weights.append(w / w.sum(axis=1, keepdims=True))  # token 0 is never predicted: it holds 0
    token_scores = np.concatenate([scores[:, [row]] * w for row, w in enumerate(weights)], axis=1)
    layer_shares = rng.dirichlet(np.ones(n_layers), size=(n_queries, n_sequences)).transpose(2, 0, 1)
    sequences = [SequenceInfo(row=row, record_id=HOSTILE_ID if row == 0 else f"doc-{row}", start=0, end=len(p),
                              text="".join(p), tokens=list(p) if per_token else []) for row, p in enumerate(pieces)]
    queries = [
        QueryInfo(0, "capital <i>fr</i>", "<i>paris</i> is the capital of", " france.", [], [], -3.25),
        QueryInfo(1, "script", "show me", " " + SCRIPT, [], [], -12.5),
        QueryInfo(2, "cats", "the cat", " sat on a mat", [], [], None),
    ]
    return ScoreResult(
        scores=torch.tensor(scores, dtype=torch.float32),
        sequences=sequences,
        queries=queries,
        layer_names=[f"model.layers.{i}.mlp.down_proj" for i in range(n_layers)],
        per_layer=torch.tensor(layer_shares * scores, dtype=torch.float32) if per_layer else None,
        per_token=torch.tensor(token_scores, dtype=torch.float32) if per_token else None,
        token_offsets=torch.tensor(offsets) if per_token else None,
        self_influence=torch.tensor(rng.uniform(1.0, 10.0, n_sequences), dtype=torch.float32),
        metadata={"model": "synthetic <model>", "strategy": "ekfac", "fisher": "sampled", "damping": 0.001,
                  "n_training_sequences_fitted": n_sequences, "corpus": "synthetic.jsonl"},
    )
