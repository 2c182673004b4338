"""The benchmark workload: where its files live, how to read them, and a reduced variant for quick checks.

The full workload is written by benchmarks/prepare.py. A reduced workload keeps the first `passages` passages
and truncates the model to its first `layers` decoder blocks, so every tool (wherefrom included) still tracks
"all MLP linears" of the model it is given and the scores stay comparable.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
WORK = REPO_ROOT / "bench-work"
MLP_PROJECTIONS = ("gate_proj", "up_proj", "down_proj")


@dataclass(frozen=True)
class Workload:
    """Paths of one workload's inputs, plus the folder its tools write into."""

    name: str
    model_dir: Path
    corpus_jsonl: Path
    queries_jsonl: Path
    corpus_ds: Path
    queries_ds: Path
    runs_dir: Path


def full_workload(work: Path = WORK) -> Workload:
    """The workload written by prepare.py (64 passages x 64 tokens, all 30 blocks)."""
    workload = Workload(
        name="full",
        model_dir=work / "smollm2-hf",
        corpus_jsonl=work / "corpus.jsonl",
        queries_jsonl=work / "queries.jsonl",
        corpus_ds=work / "corpus-ds",
        queries_ds=work / "queries-ds",
        runs_dir=work / "runs" / "full",
    )
    missing = [p for p in (workload.model_dir, workload.corpus_jsonl, workload.queries_jsonl) if not p.exists()]
    if missing:
        raise FileNotFoundError(f"workload files missing: {missing}; run `python benchmarks/prepare.py` first")
    return workload


def reduced_workload(passages: int, layers: int, work: Path = WORK) -> Workload:
    """A smaller copy of the full workload: the first `passages` passages, the first `layers` blocks."""
    full = full_workload(work)
    root = work / f"reduced-{passages}p-{layers}l"
    corpus_rows = read_jsonl(full.corpus_jsonl)
    if not 1 <= passages <= len(corpus_rows):
        raise ValueError(f"--passages must be between 1 and {len(corpus_rows)}, got {passages}")
    workload = Workload(
        name=root.name,
        model_dir=root / "model",
        corpus_jsonl=root / "corpus.jsonl",
        queries_jsonl=full.queries_jsonl,
        corpus_ds=root / "corpus-ds",
        queries_ds=full.queries_ds,
        runs_dir=work / "runs" / root.name,
    )
    if not (workload.model_dir / "config.json").exists():
        write_truncated_model(full.model_dir, workload.model_dir, layers)
    if not workload.corpus_ds.exists():
        rows = corpus_rows[:passages]
        root.mkdir(parents=True, exist_ok=True)
        write_jsonl(workload.corpus_jsonl, rows)
        save_corpus_dataset([row["input_ids"] for row in rows], workload.corpus_ds)
    return workload


def write_truncated_model(source: Path, target: Path, layers: int) -> None:
    """Save the model with only its first `layers` decoder blocks, plus its tokenizer files."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(source, dtype=torch.float32)
    total = model.config.num_hidden_layers
    if not 1 <= layers <= total:
        raise ValueError(f"--layers must be between 1 and {total}, got {layers}")
    model.model.layers = model.model.layers[:layers]
    model.config.num_hidden_layers = layers
    if getattr(model.config, "layer_types", None):
        model.config.layer_types = model.config.layer_types[:layers]
    model.save_pretrained(target)
    for tokenizer_file in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        if (source / tokenizer_file).exists():
            shutil.copy(source / tokenizer_file, target / tokenizer_file)


def write_jsonl(path: Path, rows: list[dict]) -> None:
    """Write one JSON object per line."""
    with open(path, "w") as handle:
        for row in rows:
            handle.write(json.dumps(row) + "\n")


def save_corpus_dataset(input_ids: list[list[int]], path: Path) -> None:
    """A datasets folder (save_to_disk) of training sequences, labels = input_ids, for Bergson."""
    from datasets import Dataset

    Dataset.from_dict({"input_ids": input_ids, "labels": input_ids}).save_to_disk(str(path))


def save_queries_dataset(pairs: list[tuple[list[int], list[int]]], path: Path) -> None:
    """A datasets folder of queries: input_ids = prompt + completion, labels -100 on the prompt."""
    from datasets import Dataset

    Dataset.from_dict(
        {
            "input_ids": [prompt + completion for prompt, completion in pairs],
            "labels": [[-100] * len(prompt) + completion for prompt, completion in pairs],
        }
    ).save_to_disk(str(path))


def read_jsonl(path: Path) -> list[dict]:
    """All rows of a JSON-lines file."""
    with open(path) as handle:
        return [json.loads(line) for line in handle if line.strip()]


def corpus_token_ids(path: Path) -> list[list[int]]:
    """The token ids of each corpus passage, in file order."""
    return [row["input_ids"] for row in read_jsonl(path)]


def query_token_ids(path: Path) -> list[tuple[list[int], list[int]]]:
    """(prompt ids, completion ids) of each query, in file order."""
    return [(row["prompt_ids"], row["completion_ids"]) for row in read_jsonl(path)]


def mlp_linear_names(model) -> list[str]:
    """Names of the MLP projections (gate, up, down) of every decoder block, in model order."""
    return [
        name
        for name, _ in model.named_modules()
        if name.rsplit(".", 1)[-1] in MLP_PROJECTIONS and ".mlp." in name
    ]
