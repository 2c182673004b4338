"""Retrain a model on subsets of its corpus with a :class:`~wherefrom.faithfulness.recipes.Recipe`, and cache each.

A retrained model lives in ``<cache>/subset-<subset seed>-f<fraction>-train-<seed>/`` (what the recipe saves, plus
``subset.json``), where ``<cache>`` is named after everything that determines the training (the demo's config
hash; a fine-tune's recipe, base model and corpus fingerprint). It is written into a temporary sibling and renamed
into place when finished, so a killed run leaves nothing half-written and resumes with the next model.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import asdict
from pathlib import Path

from wherefrom.faithfulness.recipes import EpochHook, Recipe
from wherefrom.faithfulness.subsets import Subset
from wherefrom.progress import progress_bar
from wherefrom.synthetic.cache import config_hash, default_cache_root
from wherefrom.synthetic.config import DemoConfig
from wherefrom.synthetic.training import cpu_threads

SUBSET_FILE = "subset.json"


def lds_cache(config: DemoConfig, cache_root: Path | None = None) -> Path:
    """The folder holding this demo config's retrained models and fitted runs."""
    return (cache_root or default_cache_root()) / f"lds-{config_hash(config)}"


def training_seeds(first: int, per_subset: int) -> list[int]:
    """Seeds of the runs on each subset (initialisation and batch order); the first is the explained model's own."""
    return [first + s for s in range(per_subset)]


def model_folder(cache: Path, subset: Subset, fraction: float, seed: int) -> Path:
    """Where the model retrained on ``subset`` with training seed ``seed`` is cached."""
    return cache / f"subset-{subset.seed}-f{fraction:g}-train-{seed}"


def is_cached(folder: Path, subset: Subset) -> bool:
    """Whether ``folder`` holds a finished model trained on exactly ``subset``'s rows."""
    path = folder / SUBSET_FILE
    return path.is_file() and json.loads(path.read_text(encoding="utf-8"))["rows"] == list(subset.rows)


def missing_models(subsets: list[Subset], fraction: float, seeds: list[int], cache: Path
                   ) -> list[tuple[Subset, int, Path]]:
    """The (subset, seed, folder) of every retraining not finished in ``cache`` yet."""
    return [(subset, seed, folder) for subset in subsets for seed in seeds
            if not is_cached(folder := model_folder(cache, subset, fraction, seed), subset)]


def retrain_all(recipe: Recipe, sequences: list[tuple[int, ...]], subsets: list[Subset], fraction: float,
                seeds: list[int], cache: Path, threads: int = 2, quiet: bool = False) -> list[list[Path]]:
    """The retrained model folder of every subset (rows) and training seed (columns), training the missing ones."""
    missing = missing_models(subsets, fraction, seeds, cache)
    if missing:
        cached = len(subsets) * len(seeds) - len(missing)
        train_missing(recipe, sequences, missing, f"retraining on subsets ({cached} cached)", threads, quiet)
    return [[model_folder(cache, subset, fraction, seed) for seed in seeds] for subset in subsets]


def train_missing(recipe: Recipe, sequences: list[tuple[int, ...]], jobs: list[tuple[Subset, int, Path]],
                  description: str, threads: int, quiet: bool) -> None:
    """Train each (subset, seed, folder) job in turn, with one bar counting every job's optimizer steps."""
    with progress_bar(sum(recipe.steps(len(subset.rows)) for subset, _, _ in jobs), description, quiet) as bar:
        for subset, seed, folder in jobs:
            done = [0]

            def advance(epoch: int, steps: int, done: list[int] = done) -> None:
                bar.advance(steps - done[0])
                done[0] = steps

            retrain(recipe, sequences, subset, seed, folder, threads, advance)


def retrain(recipe: Recipe, sequences: list[tuple[int, ...]], subset: Subset, seed: int, folder: Path,
            threads: int, after_epoch: EpochHook | None = None) -> None:
    """Train with ``recipe`` on the subset's sequences from ``seed``; save the model atomically into ``folder``."""
    with cpu_threads(threads):
        model, report = recipe.train([sequences[r] for r in subset.rows], seed, after_epoch=after_epoch)
    folder.parent.mkdir(parents=True, exist_ok=True)
    partial = folder.with_name(f".{folder.name}.partial-{os.getpid()}")
    shutil.rmtree(partial, ignore_errors=True)
    try:
        recipe.save(model, partial)
        record = {"subset_index": subset.index, "subset_seed": subset.seed, "training_seed": seed,
                  "training": asdict(report) | {"num_threads": threads},
                  "recipe": recipe.describe(), "rows": list(subset.rows)}
        (partial / SUBSET_FILE).write_text(json.dumps(record) + "\n", encoding="utf-8")
        shutil.rmtree(folder, ignore_errors=True)  # an older model for other rows under the same name
        os.replace(partial, folder)
    finally:
        shutil.rmtree(partial, ignore_errors=True)
