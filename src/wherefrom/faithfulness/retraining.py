"""Retrain the demo model on subsets of its corpus, with the demo's own training settings, and cache each model.

A retrained model lives in ``<cache root>/lds-<config hash>/subset-<subset seed>-f<fraction>-train-<seed>/``
(a Hugging Face model folder plus ``subset.json``). It is written into a temporary sibling and renamed into
place when finished, so a killed run leaves nothing half-written and resumes with the next model.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import asdict
from pathlib import Path

from transformers import AutoTokenizer, PreTrainedTokenizerFast

from wherefrom.faithfulness.subsets import Subset
from wherefrom.fileio import read_jsonl
from wherefrom.progress import track
from wherefrom.synthetic.cache import config_hash, default_cache_root
from wherefrom.synthetic.config import DemoConfig
from wherefrom.synthetic.model import build_model
from wherefrom.synthetic.training import cpu_threads, train_model

SUBSET_FILE = "subset.json"


def lds_cache(config: DemoConfig, cache_root: Path | None = None) -> Path:
    """The folder holding this demo config's retrained models and fitted runs."""
    return (cache_root or default_cache_root()) / f"lds-{config_hash(config)}"


def training_seeds(config: DemoConfig, per_subset: int) -> list[int]:
    """Seeds of the runs on each subset (initialisation and batch order); the first is the demo model's own."""
    return [config.seed + s for s in range(per_subset)]


def model_folder(cache: Path, subset: Subset, fraction: float, seed: int) -> Path:
    """Where the model retrained on ``subset`` with training seed ``seed`` is cached."""
    return cache / f"subset-{subset.seed}-f{fraction:g}-train-{seed}"


def is_cached(folder: Path, subset: Subset) -> bool:
    """Whether ``folder`` holds a finished model trained on exactly ``subset``'s rows."""
    path = folder / SUBSET_FILE
    return path.is_file() and json.loads(path.read_text(encoding="utf-8"))["rows"] == list(subset.rows)


def retrain_all(demo_dir: Path, config: DemoConfig, subsets: list[Subset], fraction: float, seeds: list[int],
                cache: Path, threads: int = 2, quiet: bool = False) -> list[list[Path]]:
    """The retrained model folder of every subset (rows) and training seed (columns), training the missing ones."""
    folders = [[model_folder(cache, subset, fraction, seed) for seed in seeds] for subset in subsets]
    missing = [(subset, seed, folder) for subset, row in zip(subsets, folders, strict=True)
               for seed, folder in zip(seeds, row, strict=True) if not is_cached(folder, subset)]
    if missing:
        tokenizer = AutoTokenizer.from_pretrained(demo_dir)
        documents = [row["text"] for row in read_jsonl(demo_dir / "corpus.jsonl")]
        sequences = tokenizer(documents)["input_ids"]
        description = f"retraining on subsets ({len(subsets) * len(seeds) - len(missing)} cached)"
        for subset, seed, folder in track(missing, len(missing), description, quiet):
            retrain(sequences, tokenizer, config, subset, seed, folder, threads)
    return folders


def retrain(sequences: list[list[int]], tokenizer: PreTrainedTokenizerFast, config: DemoConfig, subset: Subset,
            seed: int, folder: Path, threads: int) -> None:
    """Train a fresh demo model on the subset's sequences with the demo's settings; save it atomically."""
    with cpu_threads(threads):
        model = build_model(config.model, tokenizer, seed)
        report = train_model(model, [sequences[r] for r in subset.rows], config.training, tokenizer.pad_token_id,
                             seed, quiet=True)
    folder.parent.mkdir(parents=True, exist_ok=True)
    partial = folder.with_name(f".{folder.name}.partial-{os.getpid()}")
    shutil.rmtree(partial, ignore_errors=True)
    try:
        model.save_pretrained(partial)
        record = {"subset_index": subset.index, "subset_seed": subset.seed, "training_seed": seed,
                  "training": asdict(report) | {"num_threads": threads}, "rows": list(subset.rows)}
        (partial / SUBSET_FILE).write_text(json.dumps(record) + "\n", encoding="utf-8")
        shutil.rmtree(folder, ignore_errors=True)  # an older model for other rows under the same name
        os.replace(partial, folder)
    finally:
        shutil.rmtree(partial, ignore_errors=True)
