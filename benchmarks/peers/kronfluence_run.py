"""EK-FAC influence with Kronfluence on the benchmark workload, in two separately timed stages.

  python -m benchmarks.peers.kronfluence_run fit   --model DIR --corpus corpus.jsonl --out OUT
  python -m benchmarks.peers.kronfluence_run score --model DIR --corpus corpus.jsonl --queries queries.jsonl --out OUT

Run with the peers virtualenv's interpreter (benchmarks/setup_peers.sh). Settings, matched to wherefrom's:
- tracked modules: the gate/up/down projections of every decoder block;
- train loss: token-summed next-token NLL with the data labels; empirical Fisher (`use_empirical_fisher=True`);
- measurement: the query loss, i.e. the NLL summed over completion tokens only (prompt labels are -100);
- damping: `damping_factor=None`, Kronfluence's heuristic 0.1 x mean of each module's EK-FAC eigenvalues;
- float32 everywhere except the float64 eigendecomposition (Kronfluence's default).
Sign: Kronfluence scores are grad(measurement)^T (G + damping)^-1 grad(train loss). With the query loss as the
measurement a positive score means the training sequence lowers the query loss, i.e. raises
log p(completion | prompt): wherefrom's convention, so `scores.npy` is saved unflipped.
Writes OUT/scores.npy ([n_queries, n_passages] float32) and OUT/<stage>-timing.json.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from kronfluence.analyzer import Analyzer, prepare_model
from kronfluence.arguments import FactorArguments, ScoreArguments
from kronfluence.task import Task
from kronfluence.utils.dataset import DataLoaderKwargs
from torch.utils.data import Dataset
from transformers import AutoModelForCausalLM

from benchmarks.workload import corpus_token_ids, mlp_linear_names, query_token_ids

ANALYSIS_NAME = "bench"
FACTORS_NAME = "ekfac"
SCORES_NAME = "pairwise"
BATCH_SIZE = 8
IGNORE_INDEX = -100


class TokenSequences(Dataset):
    """Sequences with per-position labels (IGNORE_INDEX where a token is not predicted)."""

    def __init__(self, input_ids: list[list[int]], labels: list[list[int]]) -> None:
        self.input_ids = input_ids
        self.labels = labels

    def __len__(self) -> int:
        return len(self.input_ids)

    def __getitem__(self, index: int) -> dict[str, list[int]]:
        return {"input_ids": self.input_ids[index], "labels": self.labels[index]}


def pad_batch(items: list[dict[str, list[int]]]) -> dict[str, torch.Tensor]:
    """Right-pad a batch; padded positions get attention 0 and label IGNORE_INDEX."""
    length = max(len(item["input_ids"]) for item in items)
    input_ids = torch.zeros(len(items), length, dtype=torch.long)
    labels = torch.full((len(items), length), IGNORE_INDEX, dtype=torch.long)
    attention_mask = torch.zeros(len(items), length, dtype=torch.long)
    for row, item in enumerate(items):
        n = len(item["input_ids"])
        input_ids[row, :n] = torch.tensor(item["input_ids"])
        labels[row, :n] = torch.tensor(item["labels"])
        attention_mask[row, :n] = 1
    return {"input_ids": input_ids, "labels": labels, "attention_mask": attention_mask}


def summed_next_token_nll(batch: dict[str, torch.Tensor], model: torch.nn.Module) -> torch.Tensor:
    """Sum over the batch and its labelled positions of -log p(token_t | tokens_<t)."""
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    return F.cross_entropy(
        logits[:, :-1].reshape(-1, logits.size(-1)).float(),
        batch["labels"][:, 1:].reshape(-1),
        ignore_index=IGNORE_INDEX,
        reduction="sum",
    )


class LanguageModelingTask(Task):
    """Token-summed NLL as the training loss; completion NLL (the query loss) as the measurement."""

    def __init__(self, tracked_modules: list[str]) -> None:
        self.tracked_modules = tracked_modules

    def compute_train_loss(self, batch, model, sample: bool = False) -> torch.Tensor:
        if sample:
            raise ValueError("this benchmark uses the empirical Fisher (use_empirical_fisher=True)")
        return summed_next_token_nll(batch, model)

    def compute_measurement(self, batch, model) -> torch.Tensor:
        return summed_next_token_nll(batch, model)

    def get_influence_tracked_modules(self) -> list[str]:
        return self.tracked_modules

    def get_attention_mask(self, batch) -> torch.Tensor:
        return batch["attention_mask"]


def build_analyzer(model_dir: Path, out: Path) -> Analyzer:
    """The model (float32, eval, frozen) wrapped for Kronfluence, tracking the MLP projections."""
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    task = LanguageModelingTask(mlp_linear_names(model))
    model = prepare_model(model, task)
    analyzer = Analyzer(
        analysis_name=ANALYSIS_NAME, model=model, task=task, cpu=True, disable_tqdm=True, output_dir=str(out)
    )
    analyzer.set_dataloader_kwargs(DataLoaderKwargs(collate_fn=pad_batch))
    return analyzer


def corpus_dataset(corpus: Path) -> TokenSequences:
    ids = corpus_token_ids(corpus)
    return TokenSequences(ids, ids)


def fit(model_dir: Path, corpus: Path, out: Path) -> None:
    """Covariances, eigendecomposition and EK-FAC eigenvalue correction over the corpus."""
    analyzer = build_analyzer(model_dir, out)
    factor_args = FactorArguments(
        strategy="ekfac",
        use_empirical_fisher=True,
        covariance_max_examples=None,
        lambda_max_examples=None,
    )
    start = time.perf_counter()
    analyzer.fit_all_factors(
        factors_name=FACTORS_NAME,
        dataset=corpus_dataset(corpus),
        per_device_batch_size=BATCH_SIZE,
        factor_args=factor_args,
        overwrite_output_dir=True,
    )
    write_timing(out, "fit", time.perf_counter() - start)


def score(model_dir: Path, corpus: Path, queries: Path, out: Path) -> None:
    """Pairwise scores [n_queries, n_passages] from the fitted factors."""
    analyzer = build_analyzer(model_dir, out)
    pairs = query_token_ids(queries)
    query_set = TokenSequences(
        [prompt + completion for prompt, completion in pairs],
        [[IGNORE_INDEX] * len(prompt) + completion for prompt, completion in pairs],
    )
    start = time.perf_counter()
    analyzer.compute_pairwise_scores(
        scores_name=SCORES_NAME,
        factors_name=FACTORS_NAME,
        query_dataset=query_set,
        train_dataset=corpus_dataset(corpus),
        per_device_query_batch_size=len(query_set),
        per_device_train_batch_size=BATCH_SIZE,
        score_args=ScoreArguments(damping_factor=None),
        overwrite_output_dir=True,
    )
    elapsed = time.perf_counter() - start
    scores = analyzer.load_pairwise_scores(scores_name=SCORES_NAME)
    np.save(out / "scores.npy", scores["all_modules"].to(torch.float32).numpy())
    write_timing(out, "score", elapsed)


def write_timing(out: Path, stage: str, seconds: float) -> None:
    with open(out / f"{stage}-timing.json", "w") as handle:
        json.dump({"stage": stage, "compute_s": seconds}, handle)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("stage", choices=["fit", "score"])
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--corpus", type=Path, required=True)
    parser.add_argument("--queries", type=Path, help="queries.jsonl (score stage)")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    if args.stage == "fit":
        fit(args.model, args.corpus, args.out)
    else:
        if args.queries is None:
            parser.error("the score stage needs --queries")
        score(args.model, args.corpus, args.queries, args.out)


if __name__ == "__main__":
    main()
