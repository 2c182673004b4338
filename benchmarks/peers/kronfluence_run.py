"""EK-FAC influence with Kronfluence on the benchmark workload, in two separately timed stages.

  python -m benchmarks.peers.kronfluence_run fit   --model DIR --corpus corpus.jsonl --out OUT
  python -m benchmarks.peers.kronfluence_run score --model DIR --corpus corpus.jsonl --queries queries.jsonl --out OUT
  (both take --device cpu|cuda, --dtype float32|bfloat16, --batch-size N; defaults cpu, float32, 8)

Run with the peers virtualenv's interpreter (benchmarks/setup_peers.sh). Settings, matched to wherefrom's:
- tracked modules: the gate/up/down projections of every decoder block;
- train loss: token-summed next-token NLL with the data labels; empirical Fisher (`use_empirical_fisher=True`);
- measurement: the query loss, i.e. the NLL summed over completion tokens only (prompt labels are -100);
- damping: `damping_factor=None`, Kronfluence's heuristic 0.1 x mean of each module's EK-FAC eigenvalues;
- float32: the model in float32 and Kronfluence's default arguments (float32 everywhere except the float64
  eigendecomposition);
- bfloat16: the model loaded in bfloat16 and Kronfluence's own mixed setting for low precision,
  `smart_low_precision_factor_arguments` / `smart_low_precision_score_arguments` (autocast, covariances and
  per-sample gradients in bfloat16; eigenvalue correction, preconditioning and query SVD in float32).
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
from kronfluence.utils.common.factor_arguments import smart_low_precision_factor_arguments
from kronfluence.utils.common.score_arguments import smart_low_precision_score_arguments
from kronfluence.utils.dataset import DataLoaderKwargs
from torch.utils.data import Dataset
from transformers import AutoModelForCausalLM

from benchmarks.workload import corpus_token_ids, mlp_linear_names, query_token_ids

ANALYSIS_NAME = "bench"
FACTORS_NAME = "ekfac"
SCORES_NAME = "pairwise"
IGNORE_INDEX = -100
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


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


def build_analyzer(model_dir: Path, out: Path, device: str, dtype: str) -> Analyzer:
    """The model (in `dtype`, eval, frozen) wrapped for Kronfluence on `device`, tracking the MLP projections."""
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=DTYPES[dtype]).eval()
    task = LanguageModelingTask(mlp_linear_names(model))
    model = prepare_model(model, task)
    analyzer = Analyzer(
        analysis_name=ANALYSIS_NAME, model=model, task=task, cpu=device == "cpu", disable_tqdm=True,
        output_dir=str(out),
    )  # fmt: skip
    analyzer.set_dataloader_kwargs(DataLoaderKwargs(collate_fn=pad_batch))
    return analyzer


def corpus_dataset(corpus: Path) -> TokenSequences:
    ids = corpus_token_ids(corpus)
    return TokenSequences(ids, ids)


def factor_arguments(dtype: str) -> FactorArguments:
    """EK-FAC with the empirical Fisher over every sequence; Kronfluence's precision setting for `dtype`."""
    args = smart_low_precision_factor_arguments("ekfac", torch.bfloat16) if dtype == "bfloat16" else FactorArguments()
    args.strategy = "ekfac"
    args.use_empirical_fisher = True
    args.covariance_max_examples = None
    args.lambda_max_examples = None
    return args


def score_arguments(dtype: str) -> ScoreArguments:
    """The heuristic damping (0.1 x mean eigenvalue per module); Kronfluence's precision setting for `dtype`."""
    if dtype == "bfloat16":
        return smart_low_precision_score_arguments(damping_factor=None, dtype=torch.bfloat16)
    return ScoreArguments(damping_factor=None)


def fit(model_dir: Path, corpus: Path, out: Path, device: str, dtype: str, batch_size: int) -> None:
    """Covariances, eigendecomposition and EK-FAC eigenvalue correction over the corpus."""
    analyzer = build_analyzer(model_dir, out, device, dtype)
    start = time.perf_counter()
    analyzer.fit_all_factors(
        factors_name=FACTORS_NAME,
        dataset=corpus_dataset(corpus),
        per_device_batch_size=batch_size,
        factor_args=factor_arguments(dtype),
        overwrite_output_dir=True,
    )
    write_timing(out, "fit", time.perf_counter() - start)


def score(model_dir: Path, corpus: Path, queries: Path, out: Path, device: str, dtype: str, batch_size: int) -> None:
    """Pairwise scores [n_queries, n_passages] from the fitted factors."""
    analyzer = build_analyzer(model_dir, out, device, dtype)
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
        per_device_train_batch_size=batch_size,
        score_args=score_arguments(dtype),
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
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--dtype", choices=list(DTYPES), default="float32")
    parser.add_argument("--batch-size", type=int, default=8)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    settings = (args.device, args.dtype, args.batch_size)
    if args.stage == "fit":
        fit(args.model, args.corpus, args.out, *settings)
    else:
        if args.queries is None:
            parser.error("the score stage needs --queries")
        score(args.model, args.corpus, args.queries, args.out, *settings)


if __name__ == "__main__":
    main()
