"""The per-query measures of one model's scores, and of two models' agreement (names as in the study).

For query q with influence I(z, q) over the sequences z, and T_k(q) its k highest-scoring sequences (ties: lower
row first):

- ``bm25_top_k``: mean over z in T_k(q) of BM25(q, z) (analysis/surface.py): how much the top shares the query's words;
- ``disjoint_share``: share of the positive influence from sequences sharing no content word with q;
- ``layers_lower`` / ``layers_middle`` / ``layers_upper``: over T_k(q), the block's share of the absolute
  per-layer influence, sum_z |I_b(z, q)| / sum_b' sum_z |I_b'(z, q)| (thirds of the transformer layers,
  analysis/layers.py; needs ``--per-layer`` scores and 3 or more layers);
- ``top_share``: share of the positive influence held by the top 1% of sequences (analysis/tail.py);
- ``tail_alpha``: exponent α of the power law fitted to the positive tail (Clauset et al.; lower is heavier);
- ``recall_at_k``: |T_k(q) ∩ R(q)| / min(k, |R(q)|) over the records R(q) stating the fact (``--truth``);
- per query pair (a, b): ``pair_spearman``, Spearman ρ of I(·, a) and I(·, b), and ``other_language_share``, the
  share of b's positive influence from sequences in a language other than b's.

Between two models m and n: ``spearman``, Spearman ρ of I_m(·, q) and I_n(·, q) over all sequences, and
``overlap``, |T_k^m(q) ∩ T_k^n(q)| / k.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from wherefrom.analysis.compare import score_correlation
from wherefrom.analysis.layers import THIRDS, thirds
from wherefrom.analysis.retrieval import Truth, evaluate_query, record_order
from wherefrom.analysis.surface import disjoint_share
from wherefrom.analysis.tail import fit_power_law, top_share
from wherefrom.scaling.inputs import ComparedFolder
from wherefrom.scaling.pairs import QueryPair

TOP_FRACTION = 0.01
MEASURES = {  # name → (label, axis title)
    "bm25_top_k": ("BM25 of the top-k", "mean BM25 against the query"),
    "disjoint_share": ("no shared word", "share of positive influence"),
    "layers_lower": ("lower layers", "share of |influence| in the top-k"),
    "layers_middle": ("middle layers", "share of |influence| in the top-k"),
    "layers_upper": ("upper layers", "share of |influence| in the top-k"),
    "top_share": ("top 1% share", "share of positive influence"),
    "tail_alpha": ("tail α", "power-law exponent α"),
    "recall_at_k": ("recall@k", "recall of the fact's carriers"),
    "pair_spearman": ("pair Spearman", "Spearman ρ between the pair"),
    "other_language_share": ("other language", "share of positive influence"),
}
BETWEEN = {"spearman": "Spearman ρ", "overlap": "top-k overlap"}


@dataclass(frozen=True)
class Context:
    """What the measures need beyond a model's scores: the same for every model compared."""

    k: int
    bm25: np.ndarray  # [Q, N] BM25 of each query against each sequence
    disjoint: np.ndarray  # [Q, N] True where the sequence shares no content word with the query
    query_ids: Sequence[str]
    record_ids: Sequence[str]
    truths: dict[str, Truth] | None
    pairs: Sequence[QueryPair]
    languages: Sequence[str | None]


def top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Rows of the k highest scores, best first (ties: lower row first)."""
    return np.argsort(-scores, kind="stable")[:k]


def folder_measures(folder: ComparedFolder, context: Context) -> dict[str, np.ndarray]:
    """Every per-query (and per-pair) measure of one folder; NaN where a measure is undefined."""
    scores = _scores(folder)
    tops = [top_k(row, context.k) for row in scores]
    measures = {
        "bm25_top_k": np.array([context.bm25[q, top].mean() for q, top in enumerate(tops)]),
        "disjoint_share": np.array([disjoint_share(row, context.disjoint[q]) for q, row in enumerate(scores)]),
        **_layer_shares(folder, tops),
        "top_share": np.array([_or_nan(top_share, row, TOP_FRACTION) for row in scores]),
        "tail_alpha": np.array([_alpha(row) for row in scores]),
    }
    if context.truths is not None:
        measures["recall_at_k"] = np.array([_recall(row, context, q) for q, row in enumerate(scores)])
    if context.pairs:
        index = {q: i for i, q in enumerate(context.query_ids)}
        measures["pair_spearman"] = np.array([score_correlation(scores[index[p.first]], scores[index[p.second]]).spearman
                                              for p in context.pairs])
        measures["other_language_share"] = np.array([_other_language(scores[index[p.second]], p, context)
                                                     for p in context.pairs])
    return measures


def between(a: ComparedFolder, b: ComparedFolder, k: int) -> dict[str, np.ndarray]:
    """Per query: Spearman ρ of the two folders' scores and the overlap of their top-k."""
    x, y = _scores(a), _scores(b)
    return {
        "spearman": np.array([score_correlation(u, v).spearman for u, v in zip(x, y, strict=True)]),
        "overlap": np.array([np.intersect1d(top_k(u, k), top_k(v, k)).size / min(k, u.size)
                             for u, v in zip(x, y, strict=True)]),
    }


def _scores(folder: ComparedFolder) -> np.ndarray:
    return folder.result.scores.double().numpy()[list(folder.rows)]


def _layer_shares(folder: ComparedFolder, tops: list[np.ndarray]) -> dict[str, np.ndarray]:
    names = [f"layers_{third}" for third in THIRDS]
    per_layer = folder.result.per_layer
    try:
        blocks = None if per_layer is None else thirds(folder.result.layer_names)
    except ValueError:  # fewer than 3 transformer layers, or names without a layer number
        blocks = None
    if blocks is None:
        return {name: np.full(len(tops), math.nan) for name in names}
    shares = np.full((len(tops), len(THIRDS)), math.nan)
    for q, (row, top) in enumerate(zip(folder.rows, tops, strict=True)):
        layers = per_layer[:, row][:, torch.from_numpy(top)].double().numpy()  # [n_layers, k]: only the top's columns
        mass = np.array([np.abs(layers[list(blocks[t].members)].sum(axis=0)).sum() for t in THIRDS])
        if mass.sum() > 0.0:
            shares[q] = mass / mass.sum()
    return {name: shares[:, i] for i, name in enumerate(names)}


def _recall(row: np.ndarray, context: Context, q: int) -> float:
    truth = context.truths.get(context.query_ids[q]) if context.truths else None
    if truth is None:
        return math.nan
    ranked = record_order(torch.from_numpy(row), list(context.record_ids))
    return evaluate_query(ranked, truth, [context.k]).recall[context.k]


def _other_language(row: np.ndarray, pair: QueryPair, context: Context) -> float:
    if pair.second_language is None or all(lang is None for lang in context.languages):
        return math.nan
    other = np.array([lang is not None and lang != pair.second_language for lang in context.languages])
    return disjoint_share(row, other)


def _alpha(row: np.ndarray) -> float:
    try:
        return fit_power_law(row, n_bootstrap=0).alpha
    except ValueError:  # fewer than 10 positive scores
        return math.nan


def _or_nan(function, *args) -> float:  # type: ignore[no-untyped-def]
    try:
        return float(function(*args))
    except ValueError:
        return math.nan

