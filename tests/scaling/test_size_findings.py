"""`demo --sizes`' sentences: a direction only where both seeds of the largest size lie beyond both of the smallest."""

from __future__ import annotations

import numpy as np

from wherefrom.analysis.intervals import t_interval
from wherefrom.demo.size_findings import findings
from wherefrom.scaling.compare import Agreement, FolderComparison, ScaleComparison


def folder(label: str, bm25: list[float], recall: list[float]) -> FolderComparison:
    values = {"bm25_top_k": np.array(bm25), "recall_at_k": np.array(recall)}
    return FolderComparison(values, {n: t_interval(v.tolist()) for n, v in values.items()}, label, label, None, None, None)


def test_direction_needs_every_seed_to_agree():
    folders = [folder("xs-seed0", [4, 6], [0.2, 0.4]), folder("xs-seed1", [5, 5], [0.5, 0.5]),
               folder("l-seed0", [2, 2], [0.4, 0.6]), folder("l-seed1", [3, 1], [0.1, 0.3])]
    same = np.array([0.5, 0.7])
    agreements = [Agreement({"spearman": same}, {"spearman": t_interval(same.tolist())}, "xs-seed0", "xs-seed1")]
    comparison = ScaleComparison(10, ["a", "b"], [], "parameters", folders, agreements, None)
    bm25, recall, seeds = findings(comparison, ["xs", "xs", "l", "l"])
    # BM25 means: xs 5, 5; l 2, 2 -> both l seeds below both xs seeds
    assert bm25 == "BM25 of the top-10 (per seed, mean over queries): xs 5, 5; l 2, 2: lower for l at every seed."
    # recall means: xs 0.3, 0.5; l 0.5, 0.2 -> the seeds overlap
    assert recall.endswith("xs 0.3, 0.5; l 0.5, 0.2: the seeds do not agree on a direction.")
    assert seeds == "Spearman ρ between the two seeds of one size: xs 0.6."
