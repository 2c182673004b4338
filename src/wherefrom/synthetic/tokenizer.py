"""A byte-level BPE tokenizer trained on the demo corpus, wrapped as a Hugging Face fast tokenizer.

Encoding with special tokens (the default) puts ``<s>`` in front, so every token of a document is predicted;
a completion that starts with a space tokenizes the same alone as after its prompt.
"""

from __future__ import annotations

from collections.abc import Sequence

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

BOS, EOS, PAD = "<s>", "</s>", "<pad>"


def train_tokenizer(texts: Sequence[str], vocab_size: int, context_length: int) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE vocabulary of at most ``vocab_size`` tokens on ``texts``."""
    minimum = 3 + len(pre_tokenizers.ByteLevel.alphabet())
    if vocab_size < minimum:
        raise ValueError(f"vocab_size {vocab_size} is below the {minimum} tokens a byte-level BPE needs; raise it")
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[BOS, EOS, PAD], min_frequency=2,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    backend.train_from_iterator(texts, trainer)
    backend.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A $B", special_tokens=[(BOS, backend.token_to_id(BOS))]
    )
    return PreTrainedTokenizerFast(tokenizer_object=backend, bos_token=BOS, eos_token=EOS, pad_token=PAD,
                                   model_max_length=context_length)
