"""How well the demo model knows its planted facts: greedy completions of the queries, accuracy per kind."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerFast

from wherefrom.synthetic.queries import QUERY_KINDS, Query


@dataclass(frozen=True)
class QueryOutcome:
    """Whether greedy decoding from the prompt reproduces the completion, and what it produced."""

    query: Query
    generated_ids: tuple[int, ...]  # the greedy continuation, up to and including its first wrong token
    generated: str  # the same, decoded
    correct: bool  # every completion token is the argmax after the prompt and the completion's earlier tokens


def greedy_outcomes(model: PreTrainedModel, tokenizer: PreTrainedTokenizerFast, queries: Sequence[Query],
                    batch_size: int = 64) -> list[QueryOutcome]:
    """Greedy completions of the queries, checked token by token against the expected completions.

    Greedy decoding reproduces the completion exactly when each completion token is the argmax given the
    prompt and the completion's earlier tokens, so one teacher-forced pass per query decides it.
    """
    outcomes = []
    model.eval()
    with torch.inference_mode():
        for lo in range(0, len(queries), batch_size):
            batch = queries[lo:lo + batch_size]
            prompts = [tokenizer(q.prompt)["input_ids"] for q in batch]
            completions = [tokenizer(q.completion, add_special_tokens=False)["input_ids"] for q in batch]
            width = max(len(p) + len(c) for p, c in zip(prompts, completions, strict=True))
            input_ids = torch.full((len(batch), width), tokenizer.pad_token_id, dtype=torch.long)
            for row, (prompt, completion) in enumerate(zip(prompts, completions, strict=True)):
                input_ids[row, :len(prompt) + len(completion)] = torch.tensor(prompt + completion)
            predicted = model(input_ids=input_ids).logits.argmax(-1)  # right padding: no mask needed
            for row, (query, prompt, completion) in enumerate(zip(batch, prompts, completions, strict=True)):
                greedy = predicted[row, len(prompt) - 1:len(prompt) - 1 + len(completion)].tolist()
                wrong = [i for i, (got, want) in enumerate(zip(greedy, completion, strict=True)) if got != want]
                generated = greedy[:wrong[0] + 1] if wrong else greedy
                outcomes.append(QueryOutcome(query, tuple(generated), str(tokenizer.decode(generated)), not wrong))
    return outcomes


def accuracy_by_kind(outcomes: Sequence[QueryOutcome]) -> dict[str, dict[str, float]]:
    """For each query kind present: the number of queries, how many were right, and the fraction right."""
    summary = {}
    for kind in QUERY_KINDS:
        of_kind = [o for o in outcomes if o.query.kind == kind]
        if of_kind:
            right = sum(o.correct for o in of_kind)
            summary[kind] = {"queries": len(of_kind), "correct": right, "accuracy": right / len(of_kind)}
    return summary
