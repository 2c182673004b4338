"""Tiny models, tokenizers and corpora built from code (no downloads), shared by the tests."""

from __future__ import annotations

import json
import string
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

CHARS = string.ascii_lowercase + " .,"
TEXTS = [
    "the cat sat on the mat.",
    "a dog ran in the park, fast.",
    "paris is the capital of france.",
    "the sun is hot.",
    "birds fly south in winter.",
    "one plus one is two.",
    "rome is the capital of italy.",
    "cats like fish",
]


def char_tokenizer() -> PreTrainedTokenizerFast:
    """A character-level tokenizer over lowercase letters and a little punctuation, with a BOS token."""
    vocab = {"<bos>": 0, "<eos>": 1, "<unk>": 2, **{c: i + 3 for i, c in enumerate(CHARS)}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split("", behavior="isolated")
    tok.decoder = decoders.Fuse()
    from tokenizers.processors import TemplateProcessing

    tok.post_processor = TemplateProcessing(single="<bos> $A", special_tokens=[("<bos>", 0)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<bos>", eos_token="<eos>", unk_token="<unk>")


def tiny_llama(seed: int = 0, layers: int = 2, hidden: int = 16, dtype: torch.dtype = torch.float32,
               attention: str = "sdpa") -> LlamaForCausalLM:
    torch.manual_seed(seed)
    config = LlamaConfig(attn_implementation=attention, vocab_size=len(CHARS) + 3, hidden_size=hidden, intermediate_size=2 * hidden,
                         num_hidden_layers=layers, num_attention_heads=2, num_key_value_heads=2,
                         max_position_embeddings=64, tie_word_embeddings=False)
    return LlamaForCausalLM(config).to(dtype).eval()


def tiny_gpt2(seed: int = 0, layers: int = 2, hidden: int = 16, dtype: torch.dtype = torch.float32) -> GPT2LMHeadModel:
    torch.manual_seed(seed)
    config = GPT2Config(vocab_size=len(CHARS) + 3, n_embd=hidden, n_layer=layers, n_head=2, n_positions=64,
                        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    model = GPT2LMHeadModel(config).to(dtype).eval()
    with torch.no_grad():  # GPT-2 initialises biases at zero; give them values so the bias column is tested
        for name, p in model.named_parameters():
            if name.endswith("bias"):
                p.normal_(0, 0.02)
    return model


def save_model_dir(model: torch.nn.Module, path: Path) -> Path:
    """Save a model with the character tokenizer as a Hugging Face folder."""
    model.save_pretrained(path)
    char_tokenizer().save_pretrained(path)
    return path


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


QUERIES = [{"id": "capital", "prompt": "paris is the capital of", "completion": " france."},
           {"id": "cat", "prompt": "the cat", "completion": " sat on the mat."}]


def write_workspace(root: Path, model: torch.nn.Module | None = None, queries: list[dict] = QUERIES) -> Path:
    """``root`` with a tiny Llama (or ``model``) as model/, TEXTS as corpus.jsonl and ``queries`` as queries.jsonl."""
    save_model_dir(tiny_llama() if model is None else model, root / "model")
    write_jsonl(root / "corpus.jsonl", [{"id": f"doc-{i}", "text": t} for i, t in enumerate(TEXTS)])
    write_jsonl(root / "queries.jsonl", queries)
    return root
