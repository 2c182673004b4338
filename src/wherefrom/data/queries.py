"""Read queries: prompt + completion, as text, token ids, or chat messages; only the completion is measured."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from wherefrom.data.records import check_vocabulary, read_json_objects, token_ids
from wherefrom.errors import WherefromError

QUERY_FORMATS = "'prompt' and 'completion' (text), 'prompt_ids' and 'completion_ids' (token ids), or 'messages' " \
                "(chat; the last assistant message is the completion)"


@dataclass(frozen=True)
class Generation:
    """How the model wrote a completion: its settings and why it ended ('eos', 'sentence' or 'max_new_tokens')."""

    stop: str
    max_new_tokens: int
    sample: bool
    ended: str


@dataclass(frozen=True)
class Query:
    """A query: f = log p(completion | prompt), with prompt and completion tokenized separately (as in the paper)."""

    id: str
    prompt: str
    completion: str
    prompt_ids: tuple[int, ...]
    completion_ids: tuple[int, ...]
    generation: Generation | None = None  # set when the model wrote the completion

    @property
    def needs_completion(self) -> bool:
        """A prompt-only query: the model's own completion is generated and attributed."""
        return not self.completion_ids

    @property
    def input_ids(self) -> tuple[int, ...]:
        """Prompt tokens followed by completion tokens."""
        return self.prompt_ids + self.completion_ids


def read_queries(path: str | Path, tokenizer: Any, max_length: int) -> list[Query]:
    """Queries from a .jsonl file; each must fit in ``max_length`` tokens and have a non-empty completion."""
    path = Path(path)
    if not path.is_file():
        problem = "is a folder" if path.is_dir() else "not found"
        raise WherefromError(f"queries file {str(path)!r} {problem}; expected .jsonl with {QUERY_FORMATS}.")
    if path.suffix != ".jsonl":
        raise WherefromError(f"queries must be a .jsonl file with {QUERY_FORMATS}; got {path.name!r}.")
    queries = [parse_query(row, index, tokenizer, max_length) for index, row in enumerate(read_json_objects(path))]
    if not queries:
        raise WherefromError(f"queries file {path} holds no query.")
    return queries


def parse_query(row: dict[str, Any], index: int, tokenizer: Any, max_length: int) -> Query:
    """One query from a JSON object (see :data:`QUERY_FORMATS`)."""
    query_id = str(row.get("id", index))
    if "prompt_ids" in row or "completion_ids" in row:
        prompt_ids = _ids(row.get("prompt_ids", []), query_id, "prompt_ids", tokenizer)
        if row.get("completion_ids") is None:  # prompt ids only: the completion is generated later
            _check_lengths(query_id, prompt_ids, (), max_length)
            return Query(query_id, tokenizer.decode(prompt_ids), "", prompt_ids, ())
        completion_ids = _ids(row["completion_ids"], query_id, "completion_ids", tokenizer)
        prompt, completion = tokenizer.decode(prompt_ids), tokenizer.decode(completion_ids)
        completion_field = "completion_ids"
    elif "messages" in row:
        prompt, completion, prompt_ids, completion_ids = _chat(row["messages"], tokenizer, query_id)
        completion_field = "messages"
    elif "prompt" in row:
        prompt = _text(row["prompt"], query_id, "prompt")
        prompt_ids = tuple(tokenizer(prompt, add_special_tokens=True)["input_ids"])
        if row.get("completion") is None:  # prompt only: the completion is generated later
            _check_lengths(query_id, prompt_ids, (), max_length)
            return Query(query_id, prompt, "", prompt_ids, ())
        completion = _text(row["completion"], query_id, "completion")
        completion_ids = tuple(tokenizer(completion, add_special_tokens=False)["input_ids"])
        completion_field = "completion"
    else:
        raise WherefromError(f"query {query_id}: needs {QUERY_FORMATS}.")
    if not completion_ids:
        where = "in the last assistant message" if "messages" in row else \
            f"in {completion_field!r}, or leave {completion_field!r} out to have the model write it"
        raise WherefromError(f"query {query_id}: the completion is empty; influence is measured on completion tokens, "
                             f"so give at least one {where}.")
    _check_lengths(query_id, prompt_ids, completion_ids, max_length)
    return Query(query_id, prompt, completion, prompt_ids, completion_ids)


def _check_lengths(query_id: str, prompt_ids: tuple[int, ...], completion_ids: tuple[int, ...],
                   max_length: int) -> None:
    if not prompt_ids:
        raise WherefromError(f"query {query_id}: the prompt is empty; the first completion token needs a context "
                             "(a BOS token at least).")
    if len(completion_ids) >= max_length:
        raise WherefromError(f"query {query_id}: the completion has {len(completion_ids)} tokens, more than "
                             f"--max-length {max_length} allows with a prompt; shorten it or raise --max-length.")
    if len(prompt_ids) + max(len(completion_ids), 1) > max_length:
        raise WherefromError(f"query {query_id}: prompt + completion is {len(prompt_ids) + len(completion_ids)} "
                             f"tokens, over --max-length {max_length}; shorten the prompt or raise --max-length.")


def _text(value: Any, query_id: str, name: str) -> str:
    if not isinstance(value, str):
        raise WherefromError(f"query {query_id}: {name!r} must be a string, got {type(value).__name__}.")
    return value


def _ids(value: Any, query_id: str, name: str, tokenizer: Any) -> tuple[int, ...]:
    ids = token_ids(value, f"query {query_id}", name)
    check_vocabulary(ids, len(tokenizer), f"query {query_id}", name)
    return ids


def _chat(messages: Any, tokenizer: Any, query_id: str) -> tuple[str, str, tuple[int, ...], tuple[int, ...]]:
    if (not isinstance(messages, list) or not messages
            or not all(isinstance(m, dict) and isinstance(m.get("content", ""), str) for m in messages)
            or messages[-1].get("role") != "assistant"):
        raise WherefromError(f"query {query_id}: 'messages' must be a list of {{'role', 'content'}} objects ending "
                             "with an assistant message.")
    if getattr(tokenizer, "chat_template", None) is None:
        raise WherefromError(f"query {query_id}: the model's tokenizer has no chat template; give prompt/completion.")
    prompt = tokenizer.apply_chat_template(messages[:-1], tokenize=False, add_generation_prompt=True)
    completion = str(messages[-1].get("content", ""))
    prompt_ids = tuple(tokenizer(prompt, add_special_tokens=False)["input_ids"])
    completion_ids = tuple(tokenizer(completion, add_special_tokens=False)["input_ids"])
    return prompt, completion, prompt_ids, completion_ids
