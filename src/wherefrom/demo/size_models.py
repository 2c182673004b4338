"""The demo's synthetic world trained at several model sizes and seeds: one corpus, one tokenizer, one recipe.

The corpus and its tokenizer follow from the base config's seed alone; each (size, training seed) only changes the
model's width and depth and the seed of its initialisation and batch order. Everything is cached under
``<cache>/sizes-<hash>/``: ``corpus.jsonl`` (with each record's ``language``), ``queries.jsonl`` (completions given:
every model explains the same answer), ``ground_truth.json``, and one model folder per size and seed, each written
whole (a ``training.json`` marks it finished).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from wherefrom.synthetic.cache import default_cache_root
from wherefrom.synthetic.config import DemoConfig, ModelConfig, reduced_config
from wherefrom.synthetic.corpus import Corpus, generate_corpus
from wherefrom.synthetic.evaluation import accuracy_by_kind, greedy_outcomes
from wherefrom.synthetic.model import build_model
from wherefrom.synthetic.queries import build_queries, queries_to_jsonl
from wherefrom.synthetic.tokenizer import train_tokenizer
from wherefrom.synthetic.training import cpu_threads, train_model

SEEDS = (0, 1)
FINISHED = "training.json"


@dataclass(frozen=True)
class Size:
    """One model size: a name and its width and depth (3 layers at least, for the lower/middle/upper thirds)."""

    name: str
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int = 4


# The largest full size is the demo model itself (ModelConfig defaults), so the run stays within the demo's cost.
FULL_SIZES = (Size("xs", 16, 48, 3), Size("s", 48, 128, 3), Size("m", 96, 256, 4), Size("l", 160, 448, 4))
# The reduced sizes, 6 k to 193 k parameters (32x), on the world of reduced_sizes_config.
REDUCED_SIZES = (Size("xs", 8, 16, 3), Size("s", 16, 48, 3), Size("m", 32, 96, 3), Size("l", 64, 192, 3))


@dataclass(frozen=True)
class SizedModel:
    """A trained model folder: its size, training seed and what training measured."""

    size: Size
    seed: int
    folder: Path

    @property
    def label(self) -> str:
        return f"{self.size.name}-seed{self.seed}"


def reduced_sizes_config() -> DemoConfig:
    """The reduced demo's world cut so that `demo --sizes --reduced` trains its 8 models in well under a minute on 2
    idle cores: every fact, French statement and distractor, but a third of the filler, code and arithmetic, half the
    passage copies (177 documents), and 180 steps of 32 documents at a higher learning rate."""
    base = reduced_config()
    corpus = replace(base.corpus, n_filler_documents=20, n_code_documents=8, n_arithmetic_documents=10,
                     passage_copies=4)
    return replace(base, corpus=corpus, training=replace(base.training, epochs=30, batch_size=32, learning_rate=1e-2))


def world_directory(base: DemoConfig, sizes: tuple[Size, ...], cache_root: Path | None = None) -> Path:
    """The cache folder of this corpus, recipe and set of sizes."""
    payload = json.dumps({"base": asdict(base), "sizes": [asdict(s) for s in sizes], "seeds": SEEDS}, sort_keys=True)
    root = cache_root if cache_root is not None else default_cache_root()
    return root / f"sizes-{hashlib.sha256(payload.encode()).hexdigest()[:12]}"


def write_world(base: DemoConfig, directory: Path) -> Corpus:
    """Corpus (with languages), queries and ground truth of the base config, written once."""
    corpus = generate_corpus(base.corpus, base.seed)
    directory.mkdir(parents=True, exist_ok=True)
    if not (directory / "ground_truth.json").is_file():
        _write(directory / "corpus.jsonl", corpus.to_jsonl())
        _write(directory / "queries.jsonl", queries_to_jsonl(build_queries(corpus, base.queries_per_kind)))
        _write(directory / "ground_truth.json", json.dumps(corpus.ground_truth(), indent=2, ensure_ascii=False) + "\n")
    return corpus


def train_sizes(base: DemoConfig, sizes: tuple[Size, ...], cache_root: Path | None = None, threads: int = 2,
                quiet: bool = False, say=print) -> list[SizedModel]:  # type: ignore[no-untyped-def]
    """Every size at every seed, trained unless cached; ``say`` reports each stage."""
    directory = world_directory(base, sizes, cache_root)
    corpus = write_world(base, directory)
    texts = [d.text for d in corpus.documents]
    tokenizer = train_tokenizer(texts, base.model.vocab_size, base.model.context_length)
    models = []
    for size in sizes:
        for seed in SEEDS:
            model = SizedModel(size, seed, directory / "models" / f"{size.name}-seed{seed}")
            if not (model.folder / FINISHED).is_file():
                say(f"training {model.label} ({size.num_layers} layers, width {size.hidden_size})")
                _train(base, size, seed, tokenizer, texts, corpus, model.folder, threads, quiet)
            models.append(model)
    return models


def _train(base: DemoConfig, size: Size, seed: int, tokenizer, texts: list[str], corpus: Corpus,  # type: ignore[no-untyped-def]
           folder: Path, threads: int, quiet: bool) -> None:
    config = replace(base.model, hidden_size=size.hidden_size, intermediate_size=size.intermediate_size,
                     num_layers=size.num_layers, num_heads=size.num_heads)
    ModelConfig(**asdict(config))  # checked like any model config
    partial = folder.with_name(f".{folder.name}.partial-{os.getpid()}")
    shutil.rmtree(partial, ignore_errors=True)
    try:
        with cpu_threads(threads):
            model = build_model(config, tokenizer, seed)
            report = train_model(model, tokenizer(texts)["input_ids"], base.training, tokenizer.pad_token_id, seed,
                                 quiet=quiet)
            outcomes = greedy_outcomes(model, tokenizer, build_queries(corpus))
        model.save_pretrained(partial)
        tokenizer.save_pretrained(partial)
        _write(partial / FINISHED, json.dumps({"size": asdict(size), "seed": seed, "training": asdict(report),
                                               "accuracy": accuracy_by_kind(outcomes)}, indent=2) + "\n")
        shutil.rmtree(folder, ignore_errors=True)
        folder.parent.mkdir(parents=True, exist_ok=True)
        os.replace(partial, folder)
    finally:
        shutil.rmtree(partial, ignore_errors=True)


def _write(path: Path, text: str) -> None:
    path.write_text(text, encoding="utf-8")
