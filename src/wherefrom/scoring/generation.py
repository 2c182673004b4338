"""Prompt-only queries: the model writes the completion (greedy, or sampled), which is then attributed.

The answer ends at an end-of-sequence token (the tokenizer's or the model's), at --max-new-tokens, or, with
``stop='sentence'``, at the end of its first sentence: sentence-ending punctuation (. ! ?, with any closing
quotes or brackets) once the text goes on with a space, or a line break after some words. The token after the
punctuation is written to see that the sentence really ended ("3.5" does not), then dropped.
"""

from __future__ import annotations

import re
from dataclasses import replace

import torch
from torch import nn
from transformers import StoppingCriteria, StoppingCriteriaList

from wherefrom.data.queries import Generation, Query
from wherefrom.errors import WherefromError
from wherefrom.options import ScoreOptions
from wherefrom.progress import track

_SENTENCE_END = re.compile(r"[.!?][\"'”’)\]]*\s|\n")


def complete_queries(model: nn.Module, tokenizer: object, queries: list[Query], options: ScoreOptions,
                     quiet: bool = False) -> list[Query]:
    """Queries with their completions filled in where they had none; the others are returned as they are."""
    todo = [q for q in queries if q.needs_completion]
    if not todo:
        return queries
    written = {q.id: generate_completion(model, tokenizer, q, options)
               for q in track(todo, len(todo), "writing completions", quiet)}
    return [written[q.id] if q.needs_completion else q for q in queries]


def generate_completion(model: nn.Module, tokenizer: object, query: Query, options: ScoreOptions,
                        streamer: object = None) -> Query:
    """``query`` with the model's completion of its prompt and how it was written (see the module docstring);
    ``streamer`` (a transformers streamer) receives the tokens as they are written."""
    budget = min(options.max_new_tokens, options.max_length - len(query.prompt_ids))
    prompt = torch.tensor([query.prompt_ids], device=next(model.parameters()).device)  # where the model runs
    ends = end_of_sequence_ids(model, tokenizer)
    settings = {"do_sample": options.sample, "max_new_tokens": budget, "pad_token_id": ends[0] if ends else 0}
    if ends:
        settings["eos_token_id"] = ends
    if options.stop == "sentence":
        settings["stopping_criteria"] = StoppingCriteriaList([_SentenceEnd(tokenizer, prompt.shape[1])])
    if options.sample:
        torch.manual_seed(options.generation_seed)
        settings.update(temperature=options.temperature, top_p=options.top_p)
    else:
        settings.update(temperature=None, top_p=None, top_k=None)  # greedy: no sampling settings apply
    with torch.no_grad():
        output = model.generate(prompt, attention_mask=torch.ones_like(prompt), streamer=streamer, **settings)
    ids, ended = output[0, prompt.shape[1]:].tolist(), "max_new_tokens"
    first_end = next((i for i, token in enumerate(ids) if token in ends), None)
    if first_end is not None:
        ids, ended = ids[:first_end], "eos"
    if options.stop == "sentence":
        end = first_sentence_end(tokenizer.decode(ids))
        if end is not None:
            ids, ended = next(ids[:k] for k in range(1, len(ids) + 1) if len(tokenizer.decode(ids[:k])) >= end), \
                "sentence"
    if not ids:
        raise WherefromError(f"query {query.id}: the model ended its completion at once (EOS first), so there is "
                             "nothing to attribute; give a completion or a longer prompt.")
    generation = Generation(options.stop, options.max_new_tokens, options.sample, ended)
    return replace(query, completion=tokenizer.decode(ids), completion_ids=tuple(ids), generation=generation)


def end_of_sequence_ids(model: nn.Module, tokenizer: object) -> list[int]:
    """The tokens that end a completion: the tokenizer's EOS and the model's own (its generation config's)."""
    config = getattr(model, "generation_config", None)
    model_ends = getattr(config, "eos_token_id", None)
    model_ends = [] if model_ends is None else [model_ends] if isinstance(model_ends, int) else list(model_ends)
    tokenizer_end = getattr(tokenizer, "eos_token_id", None)
    return list(dict.fromkeys(([] if tokenizer_end is None else [tokenizer_end]) + model_ends))


def first_sentence_end(text: str) -> int | None:
    """Where the first sentence of ``text`` ends (just after its punctuation), once the text goes on after it;
    None while it has not ended. Leading spaces and line breaks are not a sentence."""
    start = len(text) - len(text.lstrip())
    match = _SENTENCE_END.search(text, start)
    return None if match is None else match.start() + len(match.group().rstrip())


class _SentenceEnd(StoppingCriteria):
    """Stops `generate` once the completion (the tokens after the prompt) has ended its first sentence."""

    def __init__(self, tokenizer: object, prompt_length: int) -> None:
        self.tokenizer, self.prompt_length = tokenizer, prompt_length

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor, **kwargs: object) -> torch.Tensor:
        done = [first_sentence_end(self.tokenizer.decode(row[self.prompt_length:])) is not None for row in input_ids]
        return torch.tensor(done, dtype=torch.bool, device=input_ids.device)
