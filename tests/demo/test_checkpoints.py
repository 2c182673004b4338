"""`demo --checkpoints`: checkpoints saved during one training, compared by training step."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from wherefrom.demo.checkpoints import checkpoint_epochs, run_checkpoints_demo
from wherefrom.synthetic.config import reduced_config


def test_checkpoints_after_an_eighth_a_quarter_a_half_and_all_epochs():
    assert checkpoint_epochs(30) == [4, 8, 15, 30] and checkpoint_epochs(16) == [2, 4, 8, 16]
    assert checkpoint_epochs(2) == [1, 2]


@pytest.mark.slow
def test_checkpoints_demo_end_to_end_on_a_tiny_training(tmp_path):
    reduced = reduced_config()
    base = replace(reduced, model=replace(reduced.model, hidden_size=16, intermediate_size=32, num_layers=3),
                   training=replace(reduced.training, epochs=4))
    summary, comparison = run_checkpoints_demo(tmp_path / "out", quiet=True, say=lambda _: None,
                                               cache_root=tmp_path / "cache", base=base)
    steps = [f.step for f in comparison.folders]
    assert comparison.axis == "training step" and steps == sorted(steps) and len(steps) == 3  # epochs 1, 2, 4
    state = json.loads((tmp_path / "cache").glob("checkpoints-*/checkpoint-*/trainer_state.json").__next__().read_text())
    assert state["global_step"] in steps
    english, french = summary.findings
    assert english.startswith("Top 5 sources of training_wording-") and french.startswith("Top 5 sources of french-")
    assert all(f"step {s}:" in english for s in steps)
    assert "Top 5 sources" in (tmp_path / "out" / "report.html").read_text()
