"""Mixture-of-experts models through the command line: what `fit` says it tracks, the presets, per-expert units,
and one-line refusals of what cannot be tracked (files hashed before and after)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch
from tiny import tiny_llama, write_workspace
from transformers import AutoConfig, AutoModelForCausalLM
from typer.testing import CliRunner

from wherefrom.cli.main import app

runner = CliRunner()


def invoke(*args: object):
    return runner.invoke(app, [str(a) for a in args])


def tiny(kind: str, **config: object) -> torch.nn.Module:
    torch.manual_seed(0)
    sizes = dict(vocab_size=40, hidden_size=16, intermediate_size=24, num_hidden_layers=2, num_attention_heads=2,
                 num_key_value_heads=2, max_position_embeddings=64)
    return AutoModelForCausalLM.from_config(AutoConfig.for_model(kind, **{**sizes, **config})).eval()


def hashes(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def mixtral(tmp_path_factory):
    root = write_workspace(tmp_path_factory.mktemp("moe"), tiny("mixtral", num_local_experts=4, num_experts_per_tok=2))
    result = invoke("fit", "--model", root / "model", "--corpus", root / "corpus.jsonl", "--out", root / "run",
                    "--batch-size", 4, "--max-length", 32)
    assert result.exit_code == 0, result.output
    return root, result.output


def test_fit_says_and_records_what_share_of_the_parameters_it_tracks(mixtral):
    root, output = mixtral
    manifest = json.loads((root / "run" / "manifest.json").read_text())
    names = [layer["name"] for layer in manifest["layers"]]
    assert "model.layers.1.mlp.experts.3.down_proj" in names and len(names) == 2 * 2 * 4
    coverage = manifest["coverage"]
    model = AutoModelForCausalLM.from_pretrained(root / "model")
    experts = sum(p.numel() for n, p in model.named_parameters() if ".experts." in n)
    assert coverage["tracked_parameters"] == experts and coverage["total_parameters"] == model.num_parameters()
    assert set(coverage["not_tracked"]) == {"attention", "embeddings", "output head", "routers", "norms"}
    assert f"tracking 16 layers: {round(100 * experts / model.num_parameters())}% of" in " ".join(output.split())


def test_per_unit_names_experts_and_their_neurons(mixtral):
    root, _ = mixtral
    for view, pattern in (("experts", "mlp:expert"), ("nodes", ":expert")):
        out = root / f"units-{view}"
        result = invoke("score", "--run", root / "run", "--queries", root / "queries.jsonl", "--out", out,
                        "--per-unit", 3, "--unit-view", view, "-q")
        assert result.exit_code == 0, result.output
        manifest = json.loads((out / "manifest.json").read_text())
        units = manifest["unit_names"]
        assert all(pattern in unit for unit in units)
        assert 3 <= len(units) and manifest["n_units"] == (8 if view == "experts" else 8 * 24)


def test_a_preset_that_matches_nothing_says_which_presets_the_model_has(tmp_path):
    root = write_workspace(tmp_path, tiny_llama())
    before = hashes(root)
    result = invoke("fit", "--model", root / "model", "--corpus", root / "corpus.jsonl", "--out", root / "run",
                    "--modules", "experts")
    assert result.exit_code == 2 and result.exception is None or isinstance(result.exception, SystemExit)
    line = " ".join(result.output.split())
    assert "--modules experts" in line and "matches no layer" in line and "mlp (6 layers)" in line
    assert "Traceback" not in result.output and hashes(root) == before


def test_experts_of_an_unknown_class_are_refused_in_one_line_naming_the_parameter(tmp_path):
    """JetMoE keeps its experts in a class the registry does not know: the default preset would leave them out."""
    root = write_workspace(tmp_path, tiny("jetmoe", num_local_experts=4, num_experts_per_tok=2, kv_channels=8))
    before = hashes(root)
    result = invoke("fit", "--model", root / "model", "--corpus", root / "corpus.jsonl", "--out", root / "run")
    line = " ".join(result.output.split())
    assert result.exit_code == 2, result.output
    assert "JetMoeParallelExperts" in line and "cannot track" in line and "Traceback" not in result.output
    assert hashes(root) == before


def test_the_summary_says_which_experts_carry_each_answer(mixtral):
    """With --per-layer, one line per query names its top experts and their share of the positive influence,
    equal to the per-layer scores summed by hand over each expert's two layers."""
    root, _ = mixtral
    out = root / "per-layer"
    result = invoke("score", "--run", root / "run", "--queries", root / "queries.jsonl", "--out", out, "--per-layer")
    assert result.exit_code == 0, result.output
    from wherefrom.scoring.results import ScoreResult

    scores = ScoreResult.load(out)
    q, positive = 0, scores.scores[0] > 0
    total = float(scores.scores[0][positive].sum())
    by_expert: dict[str, float] = {}
    for name, values in zip(scores.layer_names, scores.per_layer[:, q]):
        block, _, rest = name.partition(".experts.")
        key = f"{block}:expert{rest.split('.')[0]}"
        by_expert[key] = by_expert.get(key, 0.0) + float(values[positive].sum()) / total
    top = max(by_expert, key=by_expert.get)
    assert abs(sum(by_expert.values()) - 1) < 1e-4  # every tracked layer is an expert's here
    text = " ".join(result.output.split())
    assert f"experts carrying it: {top} {by_expert[top]:+.0%}" in text and "(of 8 experts)" in text


def test_the_dry_run_says_what_the_experts_cost(mixtral):
    root, _ = mixtral
    result = invoke("fit", "--model", root / "model", "--corpus", root / "corpus.jsonl", "--out", root / "dry",
                    "--dry-run", "--batch-size", 4, "--max-length", 32)
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert "experts: 8 experts in 2 block(s), 16 tracked layers" in text and "(100% of them)" in text
    assert "2 of 4 experts per token" in text and not (root / "dry").exists()


def test_the_experts_view_on_a_model_without_experts_is_refused_in_one_line(tmp_path):
    root = write_workspace(tmp_path, tiny_llama())
    assert invoke("fit", "--model", root / "model", "--corpus", root / "corpus.jsonl", "--out", root / "run",
                  "-q").exit_code == 0
    before = hashes(root)
    result = invoke("score", "--run", root / "run", "--queries", root / "queries.jsonl", "--out", root / "units",
                    "--per-unit", 3, "--unit-view", "experts", "-q")
    assert result.exit_code == 2 and "--unit-view experts finds no unit" in " ".join(result.output.split())
    assert len(result.output.strip().splitlines()) <= 2 and "Traceback" not in result.output
    assert hashes(root) == before


def test_demos_that_cannot_combine_are_refused_in_one_line(tmp_path):
    result = invoke("demo", "--moe", "--sizes", "--out", tmp_path / "demo")
    assert result.exit_code == 2 and "--sizes and --moe are different demos" in result.output
    assert len(result.output.strip().splitlines()) == 1 and not (tmp_path / "demo").exists()
