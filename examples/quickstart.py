"""A short end-to-end run on a tiny model this script builds: fit EK-FAC, score two queries, print the top sequences.

    python examples/quickstart.py [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import string
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from tokenizers.processors import TemplateProcessing
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

import wherefrom
from wherefrom.outputs.summary import print_summary

FACTS = ["paris is the capital of france.", "rome is the capital of italy.", "the cat sat on the mat.",
         "a dog ran in the park.", "one plus one is two.", "birds fly south in winter."]


def build_model(folder: Path) -> None:
    """A character-level Llama trained for a few seconds on FACTS, saved as a Hugging Face folder."""
    chars = string.ascii_lowercase + " .,"
    vocab = {"<bos>": 0, "<eos>": 1, "<unk>": 2, **{c: i + 3 for i, c in enumerate(chars)}}
    core = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Split("", behavior="isolated")
    core.decoder = decoders.Fuse()
    core.post_processor = TemplateProcessing(single="<bos> $A", special_tokens=[("<bos>", 0)])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=core, bos_token="<bos>", eos_token="<eos>", unk_token="<unk>")
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=len(vocab), hidden_size=32, intermediate_size=64,
                                         num_hidden_layers=2, num_attention_heads=2, max_position_embeddings=64))
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(40):
        for text in FACTS:
            ids = torch.tensor([tokenizer(text)["input_ids"]])
            loss = model(input_ids=ids, labels=ids).loss
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("wherefrom-quickstart"))
    out = parser.parse_args().out
    out.mkdir(parents=True, exist_ok=True)
    build_model(out / "model")
    (out / "corpus.jsonl").write_text("".join(json.dumps({"id": f"fact-{i}", "text": t}) + "\n"
                                              for i, t in enumerate(FACTS)))
    (out / "queries.jsonl").write_text(json.dumps({"id": "capital", "prompt": "paris is the capital of",
                                                   "completion": " france."}) + "\n")
    wherefrom.fit(out / "model", out / "corpus.jsonl", out / "run", wherefrom.FitOptions(batch_size=3))
    result = wherefrom.score(out / "run", out / "queries.jsonl", out=out / "scores",
                             options=wherefrom.ScoreOptions(per_token=True, per_layer=True, batch_size=3))
    print_summary(result)
    print(f"results in {out / 'scores'}")


if __name__ == "__main__":
    main()
