"""The demo tokenizer: lossless, a Hugging Face tokenizer after a save and load, and prompt/completion safe."""

from __future__ import annotations

from pathlib import Path

import pytest
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from wherefrom.synthetic.config import reduced_config
from wherefrom.synthetic.corpus import Corpus, generate_corpus
from wherefrom.synthetic.queries import build_queries
from wherefrom.synthetic.tokenizer import train_tokenizer

CONFIG = reduced_config()


@pytest.fixture(scope="module")
def corpus() -> Corpus:
    return generate_corpus(CONFIG.corpus, CONFIG.seed)


@pytest.fixture(scope="module")
def tokenizer(corpus: Corpus) -> PreTrainedTokenizerFast:
    return train_tokenizer([d.text for d in corpus.documents], CONFIG.model.vocab_size, CONFIG.model.context_length)


def test_vocabulary_is_at_most_the_requested_size(tokenizer: PreTrainedTokenizerFast) -> None:
    assert 256 < len(tokenizer) <= CONFIG.model.vocab_size


def test_documents_round_trip_and_start_with_bos(corpus: Corpus, tokenizer: PreTrainedTokenizerFast) -> None:
    for doc in corpus.documents:
        ids = tokenizer(doc.text)["input_ids"]
        assert ids[0] == tokenizer.bos_token_id
        assert tokenizer.bos_token_id not in ids[1:]
        assert tokenizer.decode(ids[1:]) == doc.text


def test_separate_prompt_and_completion_tokens_equal_the_joint_tokens(corpus: Corpus,
                                                                      tokenizer: PreTrainedTokenizerFast) -> None:
    for query in build_queries(corpus):
        prompt = tokenizer(query.prompt)["input_ids"]
        completion = tokenizer(query.completion, add_special_tokens=False)["input_ids"]
        assert prompt + completion == tokenizer(query.prompt + query.completion)["input_ids"], query


def test_saved_tokenizer_loads_with_auto_tokenizer(corpus: Corpus, tokenizer: PreTrainedTokenizerFast,
                                                   tmp_path: Path) -> None:
    tokenizer.save_pretrained(tmp_path)
    loaded = AutoTokenizer.from_pretrained(tmp_path)
    texts = [d.text for d in corpus.documents[:50]]
    assert loaded(texts)["input_ids"] == tokenizer(texts)["input_ids"]
    assert (loaded.bos_token, loaded.eos_token, loaded.pad_token) == ("<s>", "</s>", "<pad>")


def test_too_small_a_vocabulary_is_refused() -> None:
    with pytest.raises(ValueError, match="vocab_size"):
        train_tokenizer(["a b c"], vocab_size=100, context_length=16)
