"""Build the demo once and keep it: a Hugging Face model folder with the corpus, queries and ground truth.

The folder (default ``~/.cache/wherefrom/demo-<hash>``, the hash of the config and seed) holds:
- the model and tokenizer (``save_pretrained``; load with ``AutoModelForCausalLM`` / ``AutoTokenizer``),
- ``corpus.jsonl``: one ``{"id", "text", "language"}`` per document, in training order,
- ``queries.jsonl``: ``{"id", "prompt", "completion", "kind", "fact"}``, ``queries_per_kind`` of each kind,
- ``ground_truth.json``: every planted fact with its carrier documents, and every document's kind,
- ``demo.json``: the config, the training run and greedy accuracy per query kind (over every query).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Any

from transformers.utils import logging as hf_logging

from wherefrom.fileio import atomic_write_text
from wherefrom.synthetic.config import DemoConfig
from wherefrom.synthetic.corpus import generate_corpus
from wherefrom.synthetic.evaluation import accuracy_by_kind, greedy_outcomes
from wherefrom.synthetic.model import build_model
from wherefrom.synthetic.queries import build_queries, queries_to_jsonl
from wherefrom.synthetic.tokenizer import train_tokenizer
from wherefrom.synthetic.training import cpu_threads, train_model

FORMAT_VERSION = 1  # bump whenever generated content changes for an unchanged config
MANIFEST = "demo.json"
CACHE_ENV = "WHEREFROM_CACHE_DIR"


def config_hash(config: DemoConfig) -> str:
    """A short hash of the config (seed included) and the demo format version."""
    fields = asdict(config)
    if not config.model.experts:  # dense demos hash as before experts existed: their cached models stay valid
        for key in ("experts", "experts_per_token"):
            fields["model"].pop(key)
    payload = json.dumps({"format_version": FORMAT_VERSION, **fields}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:12]


def default_cache_root() -> Path:
    """``$WHEREFROM_CACHE_DIR``, else ``$XDG_CACHE_HOME/wherefrom``, else ``~/.cache/wherefrom``."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "wherefrom"


def demo_directory(config: DemoConfig, cache_root: str | os.PathLike[str] | None = None) -> Path:
    """Where the demo for this config lives (whether or not it is built yet)."""
    root = Path(cache_root) if cache_root is not None else default_cache_root()
    return root / f"demo-{config_hash(config)}"


def load_or_train(config: DemoConfig | None = None, cache_root: str | os.PathLike[str] | None = None,
                  num_threads: int = 2, quiet: bool = False) -> Path:
    """The demo folder for ``config`` (default: full size), built and trained first unless already cached."""
    config = config or DemoConfig()
    directory = demo_directory(config, cache_root)
    if (directory / MANIFEST).is_file():
        _add_languages(config, directory)
        return directory
    if directory.exists():  # left incomplete by hand: nothing in it can be trusted
        shutil.rmtree(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    partial = directory.with_name(f".{directory.name}.partial-{os.getpid()}")
    shutil.rmtree(partial, ignore_errors=True)
    try:
        build_demo(config, partial, num_threads=num_threads, quiet=quiet)
        os.replace(partial, directory)
    except OSError:
        if not (directory / MANIFEST).is_file():  # not a race lost to another process that built it too
            raise
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return directory


def build_demo(config: DemoConfig, directory: Path, num_threads: int = 2, quiet: bool = False) -> dict[str, Any]:
    """Generate, train, evaluate and write the whole demo into ``directory``; returns the manifest."""
    corpus = generate_corpus(config.corpus, config.seed)
    texts = [d.text for d in corpus.documents]
    tokenizer = train_tokenizer(texts, config.model.vocab_size, config.model.context_length)
    every_query = build_queries(corpus)
    shipped = build_queries(corpus, config.queries_per_kind)
    with cpu_threads(num_threads):
        model = build_model(config.model, tokenizer, config.seed)
        report = train_model(model, tokenizer(texts)["input_ids"], config.training, tokenizer.pad_token_id,
                             config.seed, quiet=quiet)
        outcomes = greedy_outcomes(model, tokenizer, every_query)
    shipped_ids = {q.id for q in shipped}
    manifest = {
        "format_version": FORMAT_VERSION,
        "config_hash": config_hash(config),
        "config": asdict(config),
        "documents": len(corpus.documents),
        "training": asdict(report) | {"num_threads": num_threads},
        "accuracy": accuracy_by_kind(outcomes),
        "shipped_queries": [{"id": o.query.id, "generated": o.generated, "correct": o.correct}
                            for o in outcomes if o.query.id in shipped_ids],
    }
    directory.mkdir(parents=True, exist_ok=True)
    with _without_hf_progress_bars():
        model.save_pretrained(directory)
        tokenizer.save_pretrained(directory)
    (directory / "corpus.jsonl").write_text(corpus.to_jsonl(), encoding="utf-8")
    (directory / "queries.jsonl").write_text(queries_to_jsonl(shipped), encoding="utf-8")
    _write_json(directory / "ground_truth.json", corpus.ground_truth())
    _write_json(directory / MANIFEST, manifest)  # last: its presence marks a finished folder
    return manifest


def _add_languages(config: DemoConfig, directory: Path) -> None:
    """Give the records of a folder cached before they carried a ``language`` their language (the same corpus,
    regenerated from the config; ids, texts and so fits and scores are unchanged)."""
    path = directory / "corpus.jsonl"
    with path.open(encoding="utf-8") as lines:
        if "language" in json.loads(lines.readline()):
            return
    atomic_write_text(path, generate_corpus(config.corpus, config.seed).to_jsonl())


def read_manifest(directory: str | os.PathLike[str]) -> dict[str, Any]:
    """The ``demo.json`` of a demo folder: config, training run, accuracy per query kind."""
    path = Path(directory) / MANIFEST
    if not path.is_file():
        raise ValueError(f"{directory} is not a finished demo folder (no {MANIFEST}); build it with load_or_train")
    return json.loads(path.read_text(encoding="utf-8"))


def read_carriers(directory: str | os.PathLike[str]) -> dict[str, tuple[str, ...]]:
    """Ground truth of a demo folder: planted fact id -> ids of the documents stating it."""
    path = Path(directory) / "ground_truth.json"
    if not path.is_file():
        raise ValueError(f"{directory} holds no ground_truth.json; build the demo with load_or_train")
    facts = json.loads(path.read_text(encoding="utf-8"))["facts"]
    return {fact["id"]: tuple(fact["carriers"]) for fact in facts}


@contextmanager
def _without_hf_progress_bars() -> Iterator[None]:
    """Silence transformers' own bars (e.g. "Writing model shards") for the block."""
    enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if enabled:
            hf_logging.enable_progress_bar()


def _write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
