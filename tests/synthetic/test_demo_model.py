"""The reduced demo end to end: trained once (about 10-30 s on one core), cached, reloaded, evaluated."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from wherefrom.synthetic.cache import default_cache_root, demo_directory, load_or_train, read_carriers, read_manifest
from wherefrom.synthetic.config import ModelConfig, TrainingConfig, reduced_config
from wherefrom.synthetic.corpus import generate_corpus
from wherefrom.synthetic.evaluation import accuracy_by_kind, greedy_outcomes
from wherefrom.synthetic.model import build_model
from wherefrom.synthetic.queries import Query, build_queries, queries_to_jsonl
from wherefrom.synthetic.training import cpu_threads

CONFIG = reduced_config()
CORPUS = generate_corpus(CONFIG.corpus, CONFIG.seed)


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return load_or_train(CONFIG, cache_root=tmp_path_factory.mktemp("cache"), num_threads=1, quiet=True)


def _generate_accuracy(model: torch.nn.Module, tokenizer: object, queries: list[Query]) -> float:
    """Fraction of queries whose completion Hugging Face's own greedy ``generate`` reproduces."""
    right = 0
    for query in queries:
        prompt = torch.tensor([tokenizer(query.prompt)["input_ids"]])
        expected = tokenizer(query.completion, add_special_tokens=False)["input_ids"]
        output = model.generate(prompt, max_new_tokens=len(expected), do_sample=False,
                                pad_token_id=tokenizer.pad_token_id)
        right += output[0, prompt.shape[1]:].tolist() == expected
    return right / len(queries)


def test_training_lowers_the_loss_substantially(demo: Path) -> None:
    training = read_manifest(demo)["training"]
    assert training["initial_loss"] > 5.0  # about log(vocabulary) for an untrained model
    assert training["epoch_losses"][-1] < 0.25 * training["initial_loss"]


def test_trained_model_knows_facts_far_above_chance(demo: Path) -> None:
    # Chance: the answer is one of at least 4 candidate values of its relation, so at most 0.25.
    tokenizer = AutoTokenizer.from_pretrained(demo)
    trained = AutoModelForCausalLM.from_pretrained(demo)
    untrained = build_model(CONFIG.model, tokenizer, seed=123)
    in_training_wording = [q for q in build_queries(CORPUS) if q.kind == "training_wording"]
    with cpu_threads(1):
        trained_accuracy = _generate_accuracy(trained, tokenizer, in_training_wording)
        untrained_accuracy = _generate_accuracy(untrained, tokenizer, in_training_wording)
    assert trained_accuracy >= 0.6
    assert untrained_accuracy <= 0.1


def test_fast_greedy_check_agrees_with_generate(demo: Path) -> None:
    tokenizer = AutoTokenizer.from_pretrained(demo)
    model = AutoModelForCausalLM.from_pretrained(demo)
    queries = build_queries(CORPUS)
    with cpu_threads(1):
        outcomes = greedy_outcomes(model, tokenizer, queries)
        for outcome in outcomes:
            prompt = torch.tensor([tokenizer(outcome.query.prompt)["input_ids"]])
            expected = tokenizer(outcome.query.completion, add_special_tokens=False)["input_ids"]
            output = model.generate(prompt, max_new_tokens=len(expected), do_sample=False,
                                    pad_token_id=tokenizer.pad_token_id)[0, prompt.shape[1]:].tolist()
            assert outcome.correct == (output == expected)
            mismatches = [i for i, (got, want) in enumerate(zip(output, expected, strict=False)) if got != want]
            first_wrong = mismatches[0] if mismatches else len(output) - 1
            assert list(outcome.generated_ids) == output[:first_wrong + 1]


def test_manifest_accuracy_is_that_of_the_saved_model(demo: Path) -> None:
    tokenizer = AutoTokenizer.from_pretrained(demo)
    model = AutoModelForCausalLM.from_pretrained(demo)
    with cpu_threads(1):
        accuracy = accuracy_by_kind(greedy_outcomes(model, tokenizer, build_queries(CORPUS)))
    assert accuracy == read_manifest(demo)["accuracy"]


def test_folder_holds_corpus_queries_and_ground_truth(demo: Path) -> None:
    assert (demo / "corpus.jsonl").read_text(encoding="utf-8") == CORPUS.to_jsonl()
    shipped = build_queries(CORPUS, CONFIG.queries_per_kind)
    assert (demo / "queries.jsonl").read_text(encoding="utf-8") == queries_to_jsonl(shipped)
    assert read_carriers(demo) == {f.id: f.carriers for f in CORPUS.facts}
    assert json.loads((demo / "config.json").read_text())["num_hidden_layers"] == CONFIG.model.num_layers


def test_second_call_reuses_the_cached_model(demo: Path) -> None:
    before = {p.name: p.stat().st_mtime_ns for p in demo.iterdir()}
    again = load_or_train(CONFIG, cache_root=demo.parent, num_threads=1, quiet=True)
    assert again == demo
    assert {p.name: p.stat().st_mtime_ns for p in demo.iterdir()} == before


def test_cache_folder_depends_on_config_and_seed(tmp_path: Path) -> None:
    other_seed = dataclasses.replace(CONFIG, seed=CONFIG.seed + 1)
    assert demo_directory(CONFIG, tmp_path) != demo_directory(other_seed, tmp_path)
    assert demo_directory(CONFIG, tmp_path) == demo_directory(reduced_config(), tmp_path)
    assert demo_directory(CONFIG, tmp_path).parent == tmp_path


def test_cache_root_follows_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("WHEREFROM_CACHE_DIR", str(tmp_path / "mine"))
    assert default_cache_root() == tmp_path / "mine"
    monkeypatch.delenv("WHEREFROM_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_root() == tmp_path / "xdg" / "wherefrom"


def test_reading_a_folder_that_is_not_a_demo_fails_clearly(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="load_or_train"):
        read_manifest(tmp_path)


def test_impossible_model_and_training_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="num_heads"):
        ModelConfig(hidden_size=30, num_heads=4)
    with pytest.raises(ValueError, match="positive"):
        ModelConfig(num_layers=0)
    with pytest.raises(ValueError, match="epochs"):
        TrainingConfig(epochs=0)
