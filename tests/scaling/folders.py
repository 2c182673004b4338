"""Tiny hand-made score folders for the compare tests, written with ScoreResult.save (the format `score` writes).

Six sequences (records r0..r5, with a language each in corpus.jsonl) and three queries; each model's per-layer
split over 3 layers sums to its scores. Every expected value in the tests is worked out by hand from these numbers.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

from wherefrom.scoring.results import QueryInfo, ScoreResult, SequenceInfo

TEXTS = ["Paris is the capital of France", "Paris est la capitale de la France", "the cat sat",
         "two plus two is four", "le chat dort", "France has wine"]
LANGUAGES = ["en", "fr", "en", "en", "fr", "en"]
QUERIES = [("capital-en", "The capital of France is", " Paris"),
           ("capital-fr", "La capitale de la France est", " Paris"),
           ("sum", "two plus two is", " four")]
SCORES = {
    "small": [[5, 1, 0.5, -1, 0, 2], [3, 4, 0.2, 0, 1, -2], [0, 0, 1, 6, 0, 0.5]],
    "large": [[1, 5, 2, -0.5, 0, 3], [4, 3, 0, 0.1, 0, 2], [0.5, 0, 0, 2, 0, 1]],
}
# per-layer split of small's query 0 over (lower, middle, upper) for rows 0 and 5; other entries split evenly
SMALL_Q0_SPLIT = {0: [1, 1, 3], 5: [-1, 1, 2]}
PARAMETERS = {"small": (4, 10), "large": (40, 100)}  # shapes of the one tensor each model folder holds


def write_corpus(root: Path, ids: list[str] | None = None) -> Path:
    """corpus.jsonl with id, text and language per record."""
    path = root / "corpus.jsonl"
    ids = ids or [f"r{i}" for i in range(len(TEXTS))]
    path.write_text("".join(json.dumps({"id": i, "text": t, "language": lang}) + "\n"
                            for i, t, lang in zip(ids, TEXTS, LANGUAGES, strict=True)), encoding="utf-8")
    return path


def write_model(root: Path, name: str, step: int | None = None) -> Path:
    """A model folder holding only a safetensors file of known size (and a trainer_state.json with ``step``)."""
    folder = root / "models" / name
    folder.mkdir(parents=True, exist_ok=True)
    save_file({"weight": torch.zeros(PARAMETERS[name])}, str(folder / "model.safetensors"))
    if step is not None:
        (folder / "trainer_state.json").write_text(json.dumps({"global_step": step}), encoding="utf-8")
    return folder


def write_folder(root: Path, name: str, corpus: Path, queries: list[tuple[str, str, str]] = QUERIES,
                 ids: list[str] | None = None, model: Path | None = None) -> Path:
    """The score folder ``root/name`` of model ``name`` (a key of SCORES)."""
    scores = np.array(SCORES[name], dtype=np.float64)[: len(queries)]
    per_layer = np.repeat(scores[None] / 3.0, 3, axis=0)
    if name == "small":
        for row, split in SMALL_Q0_SPLIT.items():
            per_layer[:, 0, row] = split
    ids = ids or [f"r{i}" for i in range(len(TEXTS))]
    result = ScoreResult(
        scores=torch.tensor(scores, dtype=torch.float32),
        sequences=[SequenceInfo(row, ids[row], 0, len(t.split()), t) for row, t in enumerate(TEXTS)],
        queries=[QueryInfo(i, qid, prompt, completion, [], []) for i, (qid, prompt, completion) in enumerate(queries)],
        layer_names=[f"model.layers.{i}.mlp.down_proj" for i in range(3)],
        per_layer=torch.tensor(per_layer, dtype=torch.float32),
        metadata={"model": str(model or write_model(root, name)), "corpus": str(corpus),
                  "columns": f"all {len(TEXTS)} sequences"},
    )
    return result.save(root / name)
