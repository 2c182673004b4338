"""The demo's statement about neurons: concentration per query kind and the English/French overlap of top units,
computed by hand on a result whose top units are chosen."""

from __future__ import annotations

import pytest
import torch

from wherefrom.demo.neurons import neuron_findings
from wherefrom.scoring.results import QueryInfo, ScoreResult, SequenceInfo
from wherefrom.scoring.unit_results import UnitInfluence

TOP = {"en-a": [0, 1, 2, 3], "fr-a": [0, 1, 2, 4], "en-b": [5, 6, 7, 8], "fr-b": [5, 6, 9, 10]}
KINDS = {"en-a": "training_wording", "fr-a": "french", "en-b": "training_wording", "fr-b": "french"}
FACTS = {"en-a": "a", "fr-a": "a", "en-b": "b", "fr-b": "b"}


def result_with_units(concentration: list[int]) -> ScoreResult:
    queries = [QueryInfo(i, q, "p", "c", [], []) for i, q in enumerate(TOP)]
    n = len(queries)
    units = UnitInfluence(names=[f"model.layers.0.mlp:{u}" for u in range(11)], view="nodes", n_units=128,
                          ids=torch.tensor(list(TOP.values())), influence=torch.ones(n, 4), positive=torch.ones(n),
                          concentration=torch.tensor(concentration), rows=torch.zeros(n, 1, dtype=torch.long),
                          split=torch.zeros(n, 1, 4))
    return ScoreResult(torch.ones(n, 1), [SequenceInfo(0, "d", 0, 1, "t")], queries, ["x"], units=units)


def test_overlap_and_concentration_are_measured_as_stated():
    findings = neuron_findings(result_with_units([3, 7, 5, -1]), KINDS, FACTS)
    assert findings.same_fact_overlap == pytest.approx((3 / 5 + 2 / 6) / 2)
    assert findings.other_fact_overlap == 0.0  # the two English queries share no top unit
    assert findings.pairs == 2 and findings.n_units == 128
    assert findings.concentration == {"training_wording": 4, "french": 7}  # -1 (none carries half) is left out
    text = findings.statement()
    assert "Jaccard 0.47 over 2 facts, against 0.00" in text and "the same neurons carry a fact" in text


def test_without_per_unit_there_is_nothing_to_say():
    plain = result_with_units([1, 1, 1, 1])
    plain.units = None
    assert neuron_findings(plain, KINDS, FACTS) is None
