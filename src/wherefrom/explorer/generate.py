"""The model's answer written token by token: a transformers streamer that reports the text so far."""

from __future__ import annotations

from collections.abc import Callable

from transformers.generation.streamers import BaseStreamer


class CompletionStreamer(BaseStreamer):
    """Receives `generate`'s tokens and calls ``on_text`` with the decoded completion after each one.

    `generate` first pushes the prompt, which is skipped. An exception raised by ``on_text`` (a cancelled job)
    stops the generation.
    """

    def __init__(self, tokenizer: object, on_text: Callable[[str], None]) -> None:
        self.tokenizer, self.on_text = tokenizer, on_text
        self.ids: list[int] = []
        self.prompt_seen = False

    def put(self, value: object) -> None:
        if not self.prompt_seen:
            self.prompt_seen = True
            return
        self.ids.extend(int(token) for token in value.reshape(-1).tolist())
        eos = getattr(self.tokenizer, "eos_token_id", None)
        shown = self.ids[:self.ids.index(eos)] if eos in self.ids else self.ids
        self.on_text(self.tokenizer.decode(shown))

    def end(self) -> None:
        """Nothing to flush: every token was reported when it came."""
