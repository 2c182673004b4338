"""What an LDS run is measured on: the explained model, how it is retrained, its corpus and queries, and where the
retrained models, fitted runs and scores are kept. Two kinds: the built-in demo, and a user's fine-tune."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

from wherefrom.data.corpus import build_sequences, corpus_fingerprint
from wherefrom.data.records import read_records
from wherefrom.errors import WherefromError
from wherefrom.faithfulness.recipes import FinetuneOptions, FinetuneRecipe, Recipe, SyntheticRecipe
from wherefrom.faithfulness.retraining import lds_cache
from wherefrom.jobs import job_fingerprint
from wherefrom.models.loading import load_model
from wherefrom.synthetic.cache import MANIFEST, config_hash, demo_directory, load_or_train
from wherefrom.synthetic.config import MAX_LENGTH, DemoConfig

EXPLAINED = "full-train"  # a fine-tune's explained model: <cache>/full-train-<seed>/, trained on every sequence


@dataclass(frozen=True)
class LdsProblem:
    """The explained model's recipe and data; ``explained`` None means the recipe trains it on the whole corpus
    (with the first training seed) into ``cache``, as the retrainings are trained."""

    subject: str  # one line naming what is measured, for tables
    recipe: Recipe
    corpus: Path
    queries: Path
    sequences: tuple[tuple[int, ...], ...]  # the corpus's training sequences, one per record, as fit builds them
    cache: Path  # retrained models
    work: Path  # fitted runs and score folders of the explained model
    max_length: int
    seed: int  # training seed of the explained model; each subset's seeds count up from it
    explained: Path | None = None
    modules: str = "mlp"


def demo_problem(config: DemoConfig, name: str, cache_root: Path | None, threads: int, quiet: bool,
                 train: bool = True) -> LdsProblem:
    """The built-in demo at ``config``: its model (trained first unless cached, or refused when ``train`` is off)
    is the explained one, retrained from scratch on each subset with the demo's settings."""
    if train:
        demo = load_or_train(config, cache_root, threads, quiet)
    else:
        demo = demo_directory(config, cache_root)
        if not (demo / MANIFEST).is_file():
            raise WherefromError(f"the {name} demo model is not trained yet ({demo}); run the command without "
                                 "--dry-run (or `wherefrom demo`) to train it first.")
    recipe = SyntheticRecipe(demo, config)
    corpus = demo / "corpus.jsonl"
    sequences = build_sequences(read_records(corpus), recipe.tokenizer(), MAX_LENGTH, pack=False)
    cache = lds_cache(config, cache_root)
    return LdsProblem(f"the {name} demo (config {config_hash(config)})", recipe, corpus, demo / "queries.jsonl",
                      tuple(s.input_ids for s in sequences), cache, cache / "runs", MAX_LENGTH, config.seed, demo)


def finetune_problem(base: Path, corpus: Path, queries: Path, options: FinetuneOptions, out: Path) -> LdsProblem:
    """``base`` fine-tuned on ``corpus`` with ``options``; everything is kept under ``out``: the retrained models
    (LoRA: adapters only) in ``out/retrained/<recipe>-<fingerprint>/``, fits and scores in ``out/work/``."""
    if not (base / "config.json").is_file():
        raise WherefromError(f"--model {base} is not a model folder with config.json; give the local folder of the "
                             "pretrained model that was fine-tuned.")
    base = base.resolve()  # LoRA adapters name their base folder
    recipe = FinetuneRecipe(base, options)
    sequences = build_sequences(read_records(corpus), recipe.tokenizer(), options.max_length, pack=False)
    training = asdict(options)
    del training["seed"]  # seeds are in each model's folder name
    key = job_fingerprint(recipe=options.recipe, training=training, base=load_model(base).fingerprint,
                          corpus=corpus_fingerprint(sequences))
    cache = out / "retrained" / f"{options.recipe}-{key}"
    return LdsProblem(f"{base.name} fine-tuned ({options.recipe}) on {corpus.name}", recipe, corpus, queries,
                      tuple(s.input_ids for s in sequences), cache, out / "work", options.max_length, options.seed,
                      None, "mlp")
