"""The demo's statement about experts (`demo --moe`): concentration per query kind and the English/French cosine
of expert influence, computed by hand on a result whose per-layer scores are chosen."""

from __future__ import annotations

import math

import pytest
import torch

from wherefrom.demo.experts import expert_findings
from wherefrom.scoring.results import QueryInfo, ScoreResult, SequenceInfo

KINDS = {"en-a": "training_wording", "fr-a": "french", "en-b": "training_wording", "fr-b": "french"}
FACTS = {"en-a": "a", "fr-a": "a", "en-b": "b", "fr-b": "b"}
LAYERS = [f"model.layers.0.mlp.experts.{e}.{p}" for e in range(4) for p in ("gate_up_proj", "down_proj")]
# Each query's influence through experts 0-3 (split evenly over an expert's two layers), one sequence.
THROUGH = {"en-a": [6.0, 2.0, 1.0, 1.0], "fr-a": [5.0, 3.0, 2.0, 0.0], "en-b": [0.0, 1.0, 1.0, 8.0],
           "fr-b": [1.0, 1.0, 4.0, 4.0]}


def result() -> ScoreResult:
    queries = [QueryInfo(i, q, "p", "c", [], []) for i, q in enumerate(THROUGH)]
    per_layer = torch.tensor([[[v / 2] for v in values for _ in range(2)] for values in THROUGH.values()])
    per_layer = per_layer.permute(1, 0, 2).contiguous()  # [layers, queries, sequences]
    return ScoreResult(per_layer.sum(0), [SequenceInfo(0, "d", 0, 1, "t")], queries, LAYERS, per_layer=per_layer)


def cosine(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b)) / math.sqrt(sum(x * x for x in a) * sum(y * y for y in b))


def test_concentration_and_language_overlap_are_measured_as_stated():
    findings = expert_findings(result(), KINDS, FACTS)
    # en-a: 6 of 10 with one expert; fr-a 5 of 10 with one; en-b 8 of 10 with one; fr-b 4+4 of 10 with two.
    assert findings.concentration == {"training_wording": 1, "french": 1.5}
    assert findings.n_experts == 4 and findings.uniform == 2 and findings.pairs == 2
    shares = {q: [v / sum(values) for v in values] for q, values in THROUGH.items()}
    same = (cosine(shares["en-a"], shares["fr-a"]) + cosine(shares["en-b"], shares["fr-b"])) / 2
    assert findings.same_fact_cosine == pytest.approx(same)
    assert findings.other_fact_cosine == pytest.approx(cosine(shares["en-a"], shares["en-b"]))
    assert "go through the same experts more than two different facts do" in findings.statement()


def test_without_per_layer_scores_or_experts_there_is_nothing_to_say():
    plain = result()
    assert expert_findings(ScoreResult(plain.scores, plain.sequences, plain.queries, LAYERS), KINDS, FACTS) is None
    dense = ScoreResult(plain.scores, plain.sequences, plain.queries, ["model.layers.0.mlp.up_proj"] * 8,
                        per_layer=plain.per_layer)
    assert expert_findings(dense, KINDS, FACTS) is None
