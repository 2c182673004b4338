"""Prompt-only queries: the model writes the completion (greedy, or sampled), which is then attributed."""

from __future__ import annotations

from dataclasses import replace

import torch
from torch import nn

from wherefrom.data.queries import Query
from wherefrom.errors import WherefromError
from wherefrom.options import ScoreOptions
from wherefrom.progress import track


def complete_queries(model: nn.Module, tokenizer: object, queries: list[Query], options: ScoreOptions,
                     quiet: bool = False) -> list[Query]:
    """Queries with their completions filled in where they had none; the others are returned as they are."""
    todo = [q for q in queries if q.needs_completion]
    if not todo:
        return queries
    generated = {q.id: generate_completion(model, tokenizer, q, options)
                 for q in track(todo, len(todo), "writing completions", quiet)}
    return [replace(q, completion=tokenizer.decode(generated[q.id]), completion_ids=generated[q.id])
            if q.needs_completion else q for q in queries]


def generate_completion(model: nn.Module, tokenizer: object, query: Query, options: ScoreOptions,
                        streamer: object = None) -> tuple[int, ...]:
    """The model's completion of ``query``'s prompt (ending before EOS); ``streamer`` (a transformers streamer)
    receives the tokens as they are written."""
    budget = min(options.max_new_tokens, options.max_length - len(query.prompt_ids))
    prompt = torch.tensor([query.prompt_ids], device=next(model.parameters()).device)  # where the model runs
    eos = getattr(tokenizer, "eos_token_id", None)
    settings = {"do_sample": options.sample, "max_new_tokens": budget, "pad_token_id": eos if eos is not None else 0}
    if options.sample:
        torch.manual_seed(options.generation_seed)
        settings.update(temperature=options.temperature, top_p=options.top_p)
    else:
        settings.update(temperature=None, top_p=None, top_k=None)  # greedy: no sampling settings apply
    with torch.no_grad():
        output = model.generate(prompt, attention_mask=torch.ones_like(prompt), streamer=streamer, **settings)
    ids = output[0, prompt.shape[1]:].tolist()
    if eos is not None and eos in ids:
        ids = ids[:ids.index(eos)]
    if not ids:
        raise WherefromError(f"query {query.id}: the model ended its completion at once (EOS first), so there is "
                             "nothing to attribute; give a completion or a longer prompt.")
    return tuple(ids)
