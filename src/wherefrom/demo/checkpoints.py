"""`wherefrom demo --checkpoints`: how the sources of a fact change over training.

One model of the demo's world (its corpus, size, recipe and seed) is trained once, saving a checkpoint after 1/8,
1/4, 1/2 and all of its epochs (each a model folder with a ``trainer_state.json`` naming its step, as Hugging
Face's Trainer writes). Each checkpoint gets its own fit and scores (the recipe of docs/compare.md), then
`compare` places them by training step, and the findings list each checkpoint's top sources of two facts.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict
from pathlib import Path

from wherefrom.demo.size_models import write_world
from wherefrom.demo.sizes import COMPARISON, TOP_K, SizesSummary, fit_and_score, truth_and_pairs, write_outputs
from wherefrom.fileio import atomic_write_text, read_jsonl
from wherefrom.folders import claim_output
from wherefrom.options import ExecutionOptions
from wherefrom.scaling.compare import ScaleComparison, compare
from wherefrom.scoring.results import ScoreResult
from wherefrom.synthetic.cache import default_cache_root
from wherefrom.synthetic.config import DemoConfig, reduced_config
from wherefrom.synthetic.model import build_model
from wherefrom.synthetic.tokenizer import train_tokenizer
from wherefrom.synthetic.training import cpu_threads, train_model

FRACTIONS = (1 / 8, 1 / 4, 1 / 2, 1)
FINISHED = "checkpoints.json"
SOURCES = 5  # top sources listed per checkpoint


def checkpoint_epochs(epochs: int) -> list[int]:
    """The epochs after which a checkpoint is saved."""
    return sorted({max(1, round(epochs * f)) for f in FRACTIONS})


def train_with_checkpoints(base: DemoConfig, cache_root: Path | None = None, threads: int = 2, quiet: bool = False,
                           say=print) -> tuple[Path, list[Path]]:  # type: ignore[no-untyped-def]
    """The world's folder and its checkpoint folders, earliest first (trained unless cached)."""
    payload = json.dumps({"checkpoints": asdict(base), "fractions": FRACTIONS}, sort_keys=True)
    root = cache_root if cache_root is not None else default_cache_root()
    directory = root / f"checkpoints-{hashlib.sha256(payload.encode()).hexdigest()[:12]}"
    corpus = write_world(base, directory)
    if not (directory / FINISHED).is_file():
        say(f"training the demo model, saving checkpoints after epochs {checkpoint_epochs(base.training.epochs)}")
        texts = [d.text for d in corpus.documents]
        tokenizer = train_tokenizer(texts, base.model.vocab_size, base.model.context_length)
        saved: list[str] = []
        wanted = set(checkpoint_epochs(base.training.epochs))

        def save(epoch: int, steps: int) -> None:
            if epoch in wanted:
                folder = directory / f"checkpoint-{steps}"
                model.save_pretrained(folder)
                tokenizer.save_pretrained(folder)
                atomic_write_text(folder / "trainer_state.json", json.dumps({"global_step": steps, "epoch": epoch}))
                saved.append(folder.name)

        with cpu_threads(threads):
            model = build_model(base.model, tokenizer, base.seed)
            train_model(model, tokenizer(texts)["input_ids"], base.training, tokenizer.pad_token_id, base.seed,
                        quiet=quiet, after_epoch=save)
        atomic_write_text(directory / FINISHED, json.dumps({"checkpoints": saved}) + "\n")
    names = json.loads((directory / FINISHED).read_text(encoding="utf-8"))["checkpoints"]
    return directory, [directory / name for name in names]


def run_checkpoints_demo(out: Path, reduced: bool = False, threads: int = 2, quiet: bool = False, say=print,  # type: ignore[no-untyped-def]
                         execution: ExecutionOptions = ExecutionOptions(), cache_root: Path | None = None,
                         base: DemoConfig | None = None, bootstraps: int = 100) -> tuple[SizesSummary, ScaleComparison]:
    """Train (or reuse) the checkpoints, fit, score and compare them into ``out`` (locked meanwhile); ``bootstraps``:
    the report's tail fits' bootstrap samples."""
    base = base or (reduced_config() if reduced else DemoConfig())
    with claim_output(out, "demo"):
        seconds: dict[str, float] = {}
        clock = time.perf_counter()
        world, checkpoints = train_with_checkpoints(base, cache_root, threads, quiet, say)
        seconds["train"] = time.perf_counter() - clock
        clock = time.perf_counter()
        folders = [fit_and_score(c.name, c, world, out, quiet, say, execution, threads) for c in checkpoints]
        seconds["fit and score"] = time.perf_counter() - clock
        clock = time.perf_counter()
        truth, pairs = truth_and_pairs(world, out)
        comparison = compare(folders, k=TOP_K, truth=truth, pairs=pairs)
        found = top_sources(folders, comparison, read_jsonl(truth))
        seconds["compare"] = time.perf_counter() - clock
        clock = time.perf_counter()
        report = write_outputs(comparison, found, folders[-1], out, "wherefrom demo: influence over training",
                               bootstraps)
        seconds["report"] = time.perf_counter() - clock
        summary = SizesSummary(str(out), str(report), str(out / COMPARISON), found, {}, seconds)
        atomic_write_text(out / "summary.json", json.dumps(asdict(summary), indent=2, ensure_ascii=False) + "\n")
        return summary, comparison


def top_sources(folders: list[Path], comparison: ScaleComparison, truths: list[dict]) -> list[str]:
    """For the first English query of a fact and its French twin: each checkpoint's top sources, carriers starred."""
    carriers = {t["query_id"]: set(t["record_ids"]) for t in truths}
    chosen = [q for q in comparison.query_ids if q.startswith("training_wording-") and q in carriers][:1]
    chosen += [f"french-{q.removeprefix('training_wording-')}" for q in chosen
               if f"french-{q.removeprefix('training_wording-')}" in carriers]
    sentences = []
    for query_id in chosen:
        parts = []
        for folder, compared in zip(folders, comparison.folders, strict=True):
            result = ScoreResult.load(folder)
            row = next(q.index for q in result.queries if q.query_id == query_id)
            records = [result.sequences[r].record_id for r in result.top(row, SOURCES)]
            parts.append(f"step {compared.step}: " + ", ".join(r + ("*" if r in carriers[query_id] else "")
                                                               for r in records))
        sentences.append(f"Top {SOURCES} sources of {query_id} (* states the fact): " + "; ".join(parts) + ".")
    return sentences
