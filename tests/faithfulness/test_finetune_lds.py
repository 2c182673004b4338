"""`wherefrom validate lds --model`: the LDS of a fine-tune (LoRA or full) of a tiny Llama, checked against autograd
gradients and scipy's Spearman, its cache of retrained models (resumed after a kill, reused), its refusals and its
dry run."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import scipy.stats
import torch
from exact import sequence_gradient
from peft import PeftModel
from tiny import QUERIES, TEXTS, char_tokenizer, write_workspace
from transformers import AutoModelForCausalLM
from typer.testing import CliRunner

from wherefrom.cli.main import app
from wherefrom.faithfulness.recipes import FinetuneRecipe
from wherefrom.faithfulness.subsets import membership, sample_subsets
from wherefrom.models.selection import select_layers

MODELS = 5


def _args(root: Path, out: Path, *extra: str) -> list[str]:
    return ["validate", "lds", "--model", str(root / "model"), "--corpus", str(root / "corpus.jsonl"), "--queries",
            str(root / "queries.jsonl"), "--models", str(MODELS), "--batch-size", "2", "--learning-rate", "0.05",
            "--threads", "1", "--out", str(out), *extra]


def _hashes(folder: Path) -> dict[str, str]:
    """sha256 of every file under ``folder`` (README.md aside: peft writes its own version into it; subset.json
    without the training's duration)."""

    def content(path: Path) -> bytes:
        if path.name != "subset.json":
            return path.read_bytes()
        record = json.loads(path.read_text())
        del record["training"]["seconds"]
        return json.dumps(record).encode()

    return {str(p.relative_to(folder)): hashlib.sha256(content(p)).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and p.name != "README.md"}


def _completion_logprob(model: torch.nn.Module, prompt: str, completion: str) -> float:
    """log p(completion | prompt) one token at a time from the model's softmax, in float64."""
    tokenizer = char_tokenizer()
    prompt_ids = tokenizer(prompt)["input_ids"]
    completion_ids = tokenizer(completion, add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        log_probs = torch.log_softmax(model(input_ids=torch.tensor([prompt_ids + completion_ids])).logits[0].double(), -1)
    return sum(float(log_probs[len(prompt_ids) - 1 + i, t]) for i, t in enumerate(completion_ids))


def _identity_lds(model: torch.nn.Module, measured: np.ndarray) -> list[float]:
    """The gradient dot product's LDS from scratch: autograd gradients of the tracked layers in float64, each
    subset's predicted value the sum of its members' scores, scipy's Spearman with the measured log p [Q, M]."""
    tokenizer = char_tokenizer()
    model = model.double()
    layers = select_layers(model, "mlp")
    train = torch.stack([sequence_gradient(model, layers, tokenizer(t)["input_ids"]) for t in TEXTS])
    queries = [(tokenizer(q["prompt"])["input_ids"], tokenizer(q["completion"], add_special_tokens=False)["input_ids"])
               for q in QUERIES]
    query_grads = torch.stack([sequence_gradient(model, layers, p + c, first_target=len(p)) for p, c in queries])
    predicted = membership(sample_subsets(len(TEXTS), MODELS, 0.5), len(TEXTS)) @ (query_grads @ train.T).numpy().T
    return [scipy.stats.spearmanr(predicted[:, q], measured[q]).statistic for q in range(len(QUERIES))]


def test_lora_lds_matches_autograd_and_caches_only_the_adapters(tmp_path):
    root = write_workspace(tmp_path)
    out = tmp_path / "lds"
    result = CliRunner().invoke(app, _args(root, out, "--methods", "identity,ekfac", "-q"))
    assert result.exit_code == 0, result.output
    report = json.loads((out / "lds.json").read_text())
    assert [row["method"] for row in report["methods"]] == ["identity", "ekfac"]
    (cache,) = (out / "retrained").iterdir()
    assert cache.name.startswith("lora-")
    folders = sorted(p for p in cache.iterdir() if p.name.startswith("subset-"))
    assert len(folders) == MODELS and (cache / "full-train-0").is_dir()
    for folder in [*folders, cache / "full-train-0"]:  # adapters only: no copy of the base model's weights
        assert {p.name for p in folder.iterdir()} == {"adapter_model.safetensors", "adapter_config.json",
                                                       "README.md", "subset.json"}
    base = AutoModelForCausalLM.from_pretrained(root / "model")

    def adapted(folder: Path) -> torch.nn.Module:
        return PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(root / "model"), folder).eval()

    record = json.loads((folders[0] / "subset.json").read_text())
    assert record["rows"] == list(sample_subsets(len(TEXTS), MODELS, 0.5)[record["subset_index"]].rows)
    measured = np.array(report["measured"])
    for q, query in enumerate(QUERIES):
        value = _completion_logprob(adapted(folders[0]), query["prompt"], query["completion"])
        assert measured[q, record["subset_index"]] == pytest.approx(value, abs=1e-4)
        assert abs(value - _completion_logprob(base, query["prompt"], query["completion"])) > 1e-3  # it trained
    expected = _identity_lds(adapted(cache / "full-train-0"), measured)
    np.testing.assert_allclose(report["methods"][0]["per_query"], expected, atol=1e-9)
    assert Path(report["protocol"]["scores"]).is_dir()


def test_a_killed_retraining_resumes_to_the_same_models_and_a_rerun_trains_nothing(tmp_path, monkeypatch):
    root = write_workspace(tmp_path)
    whole = tmp_path / "whole"
    assert CliRunner().invoke(app, _args(root, whole, "--methods", "identity", "-q")).exit_code == 0
    expected = _hashes(whole / "retrained")

    saves, save = [], FinetuneRecipe.save

    def killed_on_the_third(self, model, folder):  # the explained model, subset 0, then Ctrl-C mid-save
        saves.append(folder)
        if len(saves) == 3:
            (folder / "adapter_model.safetensors").parent.mkdir(parents=True, exist_ok=True)
            (folder / "adapter_model.safetensors").write_bytes(b"half")
            raise KeyboardInterrupt
        save(self, model, folder)

    monkeypatch.setattr(FinetuneRecipe, "save", killed_on_the_third)
    killed = tmp_path / "killed"
    first = CliRunner().invoke(app, _args(root, killed, "--methods", "identity", "-q"))
    assert first.exit_code == 130, first.output
    (cache,) = (killed / "retrained").iterdir()
    finished = sorted(p.name.lstrip(".").partition(".partial")[0] for p in saves[:2])  # saved into partial folders
    assert sorted(p.name for p in cache.iterdir()) == finished  # and the killed one left nothing
    monkeypatch.setattr(FinetuneRecipe, "save", save)
    resumed = CliRunner().invoke(app, _args(root, killed, "--methods", "identity"))
    assert resumed.exit_code == 0, resumed.output
    assert "retraining on subsets (1 cached)" in resumed.output
    assert _hashes(killed / "retrained") == expected  # seeded: the same adapters, byte for byte
    stamps = {p: p.stat().st_mtime_ns for p in (killed / "retrained").rglob("*.safetensors")}
    again = CliRunner().invoke(app, _args(root, killed, "--methods", "identity"))
    assert again.exit_code == 0 and "retraining on" not in again.output and "explained model" not in again.output
    assert {p: p.stat().st_mtime_ns for p in (killed / "retrained").rglob("*.safetensors")} == stamps


def test_full_fine_tuning_saves_whole_models_and_measures_them(tmp_path):
    root = write_workspace(tmp_path)
    out = tmp_path / "lds"
    result = CliRunner().invoke(app, _args(root, out, "--recipe", "full", "--learning-rate", "0.01",
                                           "--methods", "identity", "-q"))
    assert result.exit_code == 0, result.output
    report = json.loads((out / "lds.json").read_text())
    (cache,) = (out / "retrained").iterdir()
    assert cache.name.startswith("full-")
    folder = next(p for p in cache.iterdir() if p.name.startswith("subset-"))
    assert (folder / "model.safetensors").is_file() and (folder / "tokenizer.json").is_file()
    index = json.loads((folder / "subset.json").read_text())["subset_index"]
    model = AutoModelForCausalLM.from_pretrained(folder)
    measured = np.array(report["measured"])
    for q, query in enumerate(QUERIES):
        assert measured[q, index] == pytest.approx(_completion_logprob(model, query["prompt"], query["completion"]),
                                                   abs=1e-4)
    expected = _identity_lds(AutoModelForCausalLM.from_pretrained(cache / "full-train-0"), measured)
    np.testing.assert_allclose(report["methods"][0]["per_query"], expected, atol=1e-9)


@pytest.mark.parametrize(("extra", "words"), [
    (["--recipe", "qlora"], "--recipe 'qlora'"),
    (["--epochs", "0"], "--epochs must be at least 1"),
    (["--learning-rate", "nan"], "--learning-rate"),
    (["--fraction", "1.5"], "--fraction"),
    (["--lora-targets", "no_such_layer"], "--lora-targets no_such_layer"),
    (["--config", "reduced"], "takes no --config"),
])
def test_bad_options_are_refused_in_one_line(tmp_path, extra, words):
    root = write_workspace(tmp_path)
    result = CliRunner().invoke(app, _args(root, tmp_path / "lds", *extra, "-q"))
    assert result.exit_code == 2, result.output
    assert words in result.output and len(result.output.strip().splitlines()) == 1 and "Traceback" not in result.output


def test_corpus_without_model_and_model_without_corpus_are_refused(tmp_path):
    root = write_workspace(tmp_path)
    alone = CliRunner().invoke(app, ["validate", "lds", "--corpus", str(root / "corpus.jsonl"), "-q"])
    assert alone.exit_code == 2 and "--model" in alone.output and len(alone.output.strip().splitlines()) == 1
    missing = CliRunner().invoke(app, ["validate", "lds", "--model", str(root / "model"), "-q"])
    assert missing.exit_code == 2 and "--corpus" in missing.output
    args = _args(root, tmp_path / "lds", "-q")
    args[args.index("--model") + 1] = str(tmp_path / "none")
    nowhere = CliRunner().invoke(app, args)
    assert nowhere.exit_code == 2 and "config.json" in nowhere.output and not (tmp_path / "lds").exists()


def test_dry_run_counts_the_trainings_and_creates_nothing(tmp_path):
    root = write_workspace(tmp_path)
    before = sorted(p.name for p in tmp_path.rglob("*"))
    result = CliRunner().invoke(app, _args(root, tmp_path / "lds", "--dry-run", "-q"))
    assert result.exit_code == 0, result.output
    # 8 documents: subsets of 4, batch 2, 2 epochs = 4 steps each; the explained model 8 steps
    assert f"retrainings to run: {MODELS} (0 cached), 4 optimizer steps each; explained model: 8 steps" in result.output
    assert "one step:" in result.output and "estimated training time" in result.output
    assert sorted(p.name for p in tmp_path.rglob("*")) == before


def test_the_report_of_an_lds_folder_shows_its_table_beside_the_ekfac_scores(tmp_path):
    root = write_workspace(tmp_path)
    out = tmp_path / "lds"
    assert CliRunner().invoke(app, _args(root, out, "--methods", "identity,ekfac", "-q")).exit_code == 0
    report = json.loads((out / "lds.json").read_text())
    page = tmp_path / "report.html"
    result = CliRunner().invoke(app, ["report", str(out), "-o", str(page), "--bootstraps", "0"])
    assert result.exit_code == 0, result.output
    html = page.read_text()
    assert "Faithfulness: linear datamodeling score" in html and 'href="#lds"' in html
    for row in report["methods"]:
        e = row["estimate"]
        assert f"<td>{row['method']}</td><td>default</td><td class=\"num\">{e['mean']:.3f} [{e['low']:.3f}, " \
               f"{e['high']:.3f}]</td>" in html
    assert f"<h2><span class=\"kicker\">Query</span> {QUERIES[0]['id']}</h2>" in html  # the EK-FAC scores' report
    plain = tmp_path / "plain.html"
    assert CliRunner().invoke(app, ["report", report["protocol"]["scores"], "-o", str(plain), "--bootstraps",
                                    "0"]).exit_code == 0
    assert "linear datamodeling" not in plain.read_text()
    (out / "lds.json").write_text('{"protocol": {}}')
    damaged = CliRunner().invoke(app, ["report", str(out), "-o", str(tmp_path / "other.html")])
    assert damaged.exit_code == 2 and "lds.json" in damaged.output and len(damaged.output.strip().splitlines()) == 1
