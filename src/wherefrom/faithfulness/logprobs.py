"""Each query's completion log-probability log p(completion | prompt) under each retrained model."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn

from wherefrom.data.batching import make_batches
from wherefrom.data.queries import Query
from wherefrom.engine.stream import token_summed_nll
from wherefrom.progress import track
from wherefrom.synthetic.training import cpu_threads


def completion_logprobs(model: nn.Module, queries: list[Query], batch_size: int = 64) -> np.ndarray:
    """log p(completion | prompt) of each query in nats [Q], only completion tokens counting (as scoring does)."""
    values = np.zeros(len(queries))
    batches = make_batches([q.input_ids for q in queries], [len(q.prompt_ids) for q in queries], batch_size)
    model.eval()
    with torch.inference_mode():
        for batch in batches:
            logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
            values[batch.rows.numpy()] = -token_summed_nll(logits, batch.input_ids, batch.target_mask).double().numpy()
    return values


def measured_logprobs(folders: list[list[Path]], queries: list[Query], load: Callable[[Path], nn.Module],
                      threads: int = 2, quiet: bool = False) -> np.ndarray:
    """log p(completion | prompt) [Q, M, S] under the model of each subset m (rows of ``folders``) and training
    seed s (its columns), each read by ``load`` (the retraining recipe's)."""
    values = np.zeros((len(queries), len(folders), len(folders[0])))
    jobs = [(m, s, folder) for m, row in enumerate(folders) for s, folder in enumerate(row)]
    with cpu_threads(threads):
        for m, s, folder in track(jobs, len(jobs), "query log-probabilities", quiet):
            values[:, m, s] = completion_logprobs(load(folder), queries)
    return values
