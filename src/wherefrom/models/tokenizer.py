"""The model's tokenizer, read from its files only when text has to be encoded or decoded.

Token ids need no tokenizer: a model folder without tokenizer files fits, scores and indexes an ``input_ids``
corpus with ``prompt_ids``/``completion_ids`` queries. Encoding text without a tokenizer is refused in one line;
decoding shows the ids themselves (``⟨17⟩⟨4⟩``), so results and reports still read.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from wherefrom.errors import WherefromError

TOKENIZER_FILES = ("tokenizer*", "vocab*", "merges.txt", "*.model", "*.tiktoken")  # what tokenizers are saved as
TOKEN_IDS = "input_ids in the corpus, prompt_ids and completion_ids in queries"


def ids_text(ids: Sequence[int]) -> str:
    """How token ids read where there is no tokenizer to decode them."""
    return "".join(f"⟨{int(t)}⟩" for t in ids)


def config_eos(config: Any) -> int | None:
    """The end-of-sequence id a model config names (the first of several), if it is in the vocabulary."""
    eos = getattr(config, "eos_token_id", None)
    eos = eos[0] if isinstance(eos, list) and eos else eos
    return eos if isinstance(eos, int) and 0 <= eos < getattr(config, "vocab_size", eos + 1) else None


class ModelTokenizer:
    """Encodes and decodes text for one model, loading its tokenizer on first use.

    Called like a Hugging Face tokenizer; ``decode``, ``batch_decode``, ``eos_token_id``, ``chat_template`` and
    ``apply_chat_template`` behave as theirs.
    """

    def __init__(self, folder: Path, load: Callable[[], Any], config_eos: int | None = None,
                 config_vocabulary: int | None = None) -> None:
        self.folder = folder  # where the tokenizer files are (or would be): a folder, or a .gguf file
        self._load = load
        self._config_eos = config_eos  # the model config's EOS id, used when there is no tokenizer
        self._config_vocabulary = config_vocabulary  # the model config's vocabulary size, likewise
        self._tokenizer: Any = None
        self._problem: str | None = None  # why there is no usable tokenizer, once loading was tried

    @property
    def available(self) -> bool:
        """Whether the model has a usable tokenizer (loads it the first time)."""
        if self._tokenizer is None and self._problem is None:
            self._tokenizer, self._problem = self._try_load()
        return self._tokenizer is not None

    def require(self, purpose: str, ids_instead: bool = True) -> Any:
        """The Hugging Face tokenizer; a one-line WherefromError saying what to do when there is none (and, with
        ``ids_instead``, that token ids need none)."""
        if not self.available:
            instead = f", or give token ids ({TOKEN_IDS})" if ids_instead else ""
            raise WherefromError(f"{purpose} needs the model's tokenizer, but {self._problem}: save the tokenizer into "
                                 f"that folder (tokenizer.save_pretrained){instead}.")
        return self._tokenizer

    def __call__(self, text: str | list[str], **kwargs: Any) -> Any:
        return self.require("encoding text")(text, **kwargs)

    def __len__(self) -> int:
        """Token ids below this are in the vocabulary: the tokenizer's, else the model config's (else any id)."""
        if self.available:
            return len(self._tokenizer)
        return self._config_vocabulary if self._config_vocabulary is not None else sys.maxsize

    def decode(self, ids: Sequence[int]) -> str:
        return self._tokenizer.decode(list(ids)) if self.available else ids_text(ids)

    def batch_decode(self, id_lists: Sequence[Sequence[int]]) -> list[str]:
        if not self.available:
            return [ids_text(ids) for ids in id_lists]
        return self._tokenizer.batch_decode([list(ids) for ids in id_lists])

    @property
    def eos_token_id(self) -> int | None:
        """The tokenizer's end-of-sequence id, or the model config's when there is no tokenizer."""
        return self._tokenizer.eos_token_id if self.available else self._config_eos

    @property
    def chat_template(self) -> str | None:
        return self.require("chat 'messages'").chat_template

    def apply_chat_template(self, messages: list[dict[str, Any]], **kwargs: Any) -> Any:
        return self.require("chat 'messages'").apply_chat_template(messages, **kwargs)

    def _try_load(self) -> tuple[Any, str | None]:
        folder = self.folder.parent if self.folder.is_file() else self.folder
        if self.folder.is_dir() and not any(any(folder.glob(pattern)) for pattern in TOKENIZER_FILES):
            return None, f"{self.folder} has no tokenizer files"
        try:
            tokenizer = self._load()
        except Exception as exc:  # noqa: BLE001 - any failure to read the files means: no usable tokenizer
            reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            return None, f"the tokenizer in {self.folder} could not be loaded ({reason})"
        if not getattr(tokenizer, "vocab_size", 0):
            return None, f"{self.folder} has no tokenizer vocabulary"
        return tokenizer, None
