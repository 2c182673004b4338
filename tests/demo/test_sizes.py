"""`demo --sizes`: the sizes span 30x in parameters, and the pipeline runs end to end on a tiny world."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
from transformers import LlamaConfig, LlamaForCausalLM

from wherefrom.demo.size_models import FULL_SIZES, REDUCED_SIZES, SEEDS, Size, reduced_sizes_config
from wherefrom.demo.sizes import run_sizes_demo
from wherefrom.synthetic.config import DemoConfig, reduced_config


def parameters(size: Size, vocabulary: int) -> int:
    config = LlamaConfig(vocab_size=vocabulary, hidden_size=size.hidden_size, intermediate_size=size.intermediate_size,
                         num_hidden_layers=size.num_layers, num_attention_heads=size.num_heads,
                         num_key_value_heads=size.num_heads, tie_word_embeddings=True)
    return sum(p.numel() for p in LlamaForCausalLM(config).parameters())


@pytest.mark.parametrize("sizes, base", [(FULL_SIZES, DemoConfig()), (REDUCED_SIZES, reduced_sizes_config())])
def test_four_sizes_spanning_30x_with_3_layers_or_more(sizes, base):
    counts = [parameters(s, base.model.vocab_size) for s in sizes]
    assert len(sizes) == 4 and counts == sorted(counts) and counts[-1] >= 30 * counts[0], counts
    assert min(s.num_layers for s in sizes) >= 3 and len(SEEDS) == 2


@pytest.mark.slow
def test_sizes_demo_end_to_end_on_a_tiny_world(tmp_path):
    reduced = reduced_config()
    base = replace(reduced, training=replace(reduced.training, epochs=1))
    sizes = (Size("a", 8, 16, 3), Size("b", 16, 32, 3))
    said: list[str] = []
    summary, comparison = run_sizes_demo(tmp_path / "out", quiet=True, say=said.append, cache_root=tmp_path / "cache",
                                         base=base, sizes=sizes)
    labels = ["a-seed0", "a-seed1", "b-seed0", "b-seed1"]
    assert [f.label for f in comparison.folders] == labels and comparison.axis == "parameters"
    assert comparison.folders[0].parameters < comparison.folders[2].parameters
    assert {"recall_at_k", "other_language_share", "layers_upper"} <= set(comparison.folders[0].values)
    assert comparison.languages is not None and len(comparison.pairs) == 3  # each French query with its English one
    assert summary.findings[0].startswith("Greedy accuracy") and "not in French" in summary.findings[-1]
    assert any("lower layers" in s for s in summary.findings) and "training a-seed0 (3 layers, width 8)" in said
    written = json.loads((tmp_path / "out" / "compare.json").read_text())
    assert [f["label"] for f in written["folders"]] == labels
    assert "What was measured" in (tmp_path / "out" / "report.html").read_text()
    again, _ = run_sizes_demo(tmp_path / "out", quiet=True, say=said.append, cache_root=tmp_path / "cache",
                              base=base, sizes=sizes)
    assert again.findings == summary.findings and said.count("training a-seed0 (3 layers, width 8)") == 1  # cached
