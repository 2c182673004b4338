"""The command line end to end on a tiny model and corpus written here, and its answers to bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from tiny import TEXTS, save_model_dir, tiny_gpt2, tiny_llama, write_jsonl, write_workspace
from typer.testing import CliRunner

from wherefrom.cli.main import app

runner = CliRunner()


def invoke(*args: str):
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    write_workspace(root)
    result = invoke("fit", "--model", root / "model", "--corpus", root / "corpus.jsonl", "--out", root / "run",
                    "--batch-size", 3, "--max-length", 32, "-q")
    assert result.exit_code == 0, result.output
    return root


def test_fit_writes_factors_and_a_manifest(workspace):
    manifest = json.loads((workspace / "run" / "manifest.json").read_text())
    assert manifest["options"]["strategy"] == "ekfac" and manifest["options"]["fisher"] == "sampled"
    assert [layer["name"] for layer in manifest["layers"]][:3] == [f"model.layers.0.mlp.{p}_proj" for p in ("gate", "up", "down")]
    assert manifest["n_sequences"] == len(TEXTS) and len(manifest["model"]["fingerprint"]) == 16
    factors = load_file(str(workspace / "run" / "factors.safetensors"))
    assert factors["model.layers.0.mlp.up_proj/eigenvalues"].shape == (32, 16)
    assert not any(p.suffix == ".partial" for p in (workspace / "run").iterdir())


def test_score_writes_scores_sidecars_and_a_summary(workspace):
    out = workspace / "out"
    result = invoke("score", "--run", workspace / "run", "--queries", workspace / "queries.jsonl", "--out", out,
                    "--per-layer", "--per-token", "--top-k", 3)
    assert result.exit_code == 0, result.output
    assert "capital" in result.output and "doc-2" in result.output  # the terminal summary names the top sequence
    tensors = load_file(str(out / "scores.safetensors"))
    assert tensors["scores"].shape == (2, len(TEXTS)) and tensors["per_layer"].shape == (6, 2, len(TEXTS))
    sequences = [json.loads(line) for line in (out / "sequences.jsonl").read_text().splitlines()]
    assert [s["record_id"] for s in sequences] == [f"doc-{i}" for i in range(len(TEXTS))]
    results = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert results[0]["query_id"] == "capital" and len(results[0]["top"]) == 3
    top = results[0]["top"][0]
    assert top["record_id"] == "doc-2"  # "paris is the capital of france." explains its own completion
    assert abs(sum(top["per_token"]) - top["score"]) < 1e-3 * abs(top["score"])
    assert "positive" in json.loads((out / "manifest.json").read_text())["sign_and_units"]


def test_version_and_help():
    assert invoke("--version").output.startswith("wherefrom ")
    for command in ("fit", "score"):
        assert invoke(command, "--help").exit_code == 0


def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


@pytest.mark.parametrize(
    ("case", "needle"),
    [
        ("missing corpus", "not found"),
        ("empty corpus", "empty"),
        ("empty completion", "completion is empty"),
        ("completion too long", "--max-length"),
        ("unknown module preset", "not a preset"),
        ("unknown strategy", "--strategy"),
    ],
)
def test_bad_input_gives_a_clear_error_and_leaves_outputs_intact(workspace, tmp_path, case, needle):
    out = workspace / "out-kept"
    if not out.exists():
        assert invoke("score", "--run", workspace / "run", "--queries", workspace / "queries.jsonl", "--out", out,
                      "-q").exit_code == 0
    before_out, before_run = snapshot(out), snapshot(workspace / "run")
    queries, corpus, extra = workspace / "queries.jsonl", workspace / "corpus.jsonl", []
    command = "score"
    if case == "missing corpus":
        corpus = tmp_path / "nope.jsonl"
    elif case == "empty corpus":
        corpus = tmp_path / "empty.jsonl"
        corpus.write_text("")
    elif case == "empty completion":
        queries = write_jsonl(tmp_path / "q.jsonl", [{"prompt": "the cat", "completion": ""}])
    elif case == "completion too long":
        queries = write_jsonl(tmp_path / "q.jsonl", [{"prompt": "a", "completion": "the cat sat " * 10}])
    else:
        command = "fit"
    if command == "score":
        result = invoke("score", "--run", workspace / "run", "--queries", queries, "--corpus", corpus, "--out", out, "-q")
    else:
        extra = ["--modules", "transformer-blocks"] if case == "unknown module preset" else ["--strategy", "lissa"]
        result = invoke("fit", "--model", workspace / "model", "--corpus", corpus, "--out", workspace / "run", "-q", *extra)
    assert result.exit_code == 2, result.output
    assert needle in result.output and "Traceback" not in result.output
    assert snapshot(out) == before_out and snapshot(workspace / "run") == before_run


def test_factors_of_another_model_are_refused(workspace, tmp_path):
    model = save_model_dir(tiny_llama(), tmp_path / "model")
    corpus = workspace / "corpus.jsonl"
    assert invoke("fit", "--model", model, "--corpus", corpus, "--out", tmp_path / "run", "-q").exit_code == 0
    save_model_dir(tiny_llama(seed=1), model)  # the model changes after fitting (say, another training step)
    result = invoke("score", "--run", tmp_path / "run", "--queries", workspace / "queries.jsonl", "--out",
                    tmp_path / "out", "-q")
    assert result.exit_code == 2 and "fitted for model" in result.output
    assert not (tmp_path / "out").exists()


def test_gpt2_conv1d_model_runs_end_to_end(workspace, tmp_path):
    model = save_model_dir(tiny_gpt2(), tmp_path / "gpt2")
    assert invoke("fit", "--model", model, "--corpus", workspace / "corpus.jsonl", "--out", tmp_path / "run",
                  "--strategy", "kfac", "--fisher", "empirical", "-q").exit_code == 0
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert {layer["type"] for layer in manifest["layers"]} == {"Conv1DLayer"} and manifest["layers"][0]["has_bias"]
    result = invoke("score", "--run", tmp_path / "run", "--queries", workspace / "queries.jsonl", "--out",
                    tmp_path / "out", "-q")
    assert result.exit_code == 0, result.output


def test_a_prompt_only_query_is_completed_by_the_model_and_attributed(workspace, tmp_path):
    from tiny import char_tokenizer
    from transformers import AutoModelForCausalLM

    queries = write_jsonl(tmp_path / "q.jsonl", [{"id": "open", "prompt": "the cat"}])
    out = tmp_path / "out"
    result = invoke("score", "--run", workspace / "run", "--queries", queries, "--out", out, "--max-new-tokens", 5, "-q")
    assert result.exit_code == 0, result.output
    written = json.loads((out / "queries.jsonl").read_text().splitlines()[0])
    model = AutoModelForCausalLM.from_pretrained(workspace / "model")
    tokenizer = char_tokenizer()
    ends = {tokenizer.eos_token_id, model.config.eos_token_id}  # the tokenizer's EOS (1), the model's (2)
    ids, expected = tokenizer("the cat")["input_ids"], []
    with torch.no_grad():  # greedy by argmax, up to 5 tokens, ending before an EOS
        while len(expected) < 5:
            token = int(model(input_ids=torch.tensor([ids + expected])).logits[0, -1].argmax())
            if token in ends:
                break
            expected.append(token)
    assert written["completion_ids"] == expected and len(expected) >= 1
    assert written["completion"] == tokenizer.decode(expected)
    assert written["generation"] == {"stop": "eos", "max_new_tokens": 5, "sample": False,
                                     "ended": "eos" if len(expected) < 5 else "max_new_tokens"}


def test_analyse_and_report_read_a_score_folder(workspace, tmp_path):
    out = workspace / "out"
    if not out.exists():
        assert invoke("score", "--run", workspace / "run", "--queries", workspace / "queries.jsonl", "--out", out,
                      "--per-token", "-q").exit_code == 0
    analysed = runner.invoke(app, ["analyse", str(out), "--bootstraps", "0"], env={"COLUMNS": "240"})
    assert analysed.exit_code == 0, analysed.output
    assert "capital" in analysed.output and "top-1% share" in analysed.output
    report = invoke("report", out, "-o", tmp_path / "r.html", "--bootstraps", 0)
    assert report.exit_code == 0 and (tmp_path / "r.html").read_text().count("capital") >= 1
    missing = invoke("analyse", tmp_path)
    assert missing.exit_code == 2 and "scores.safetensors" in missing.output
