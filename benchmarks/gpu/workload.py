"""The GPU benchmark's workload, built on the machine that runs it (nothing large travels, nothing is downloaded).

- Model: a Llama-architecture model built from a config with random weights (seeded), saved in bfloat16 with a
  word-level tokenizer over its whole vocabulary. The `h200` size has hidden 2048, MLP width 4096, 24 blocks,
  16 heads (4 key/value heads), vocabulary 32000: 0.99 B parameters. Its MLP width is 4096 rather than the 5632
  of TinyLlama-1.1B because every tool eigendecomposes two or three MLP-width factors per block in float64; at
  5632 those decompositions alone would cost each tool about 2.4 times more device time.
- Reduced model: the same weights cut to the first `reduced_layers` blocks, saved in float32, for the float32
  comparison (a float32 EK-FAC fit of the whole model by three tools does not fit the device time).
- Corpus: `sequences` sequences of exactly `seq_len` token ids. Each is drawn from one of 16 topics, a topic
  being a Zipf distribution over its own random ordering of the vocabulary, so sequences of one topic share
  their frequent tokens and their gradients correlate.
- Queries: 16, one per topic, a fresh prompt and completion drawn from the topic's distribution.

Files are written in the formats every tool reads: corpus.jsonl / queries.jsonl (wherefrom, Kronfluence) and
datasets folders (Bergson); see benchmarks.workload.Workload.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch

from benchmarks.workload import (
    Workload,
    save_corpus_dataset,
    save_queries_dataset,
    write_jsonl,
    write_truncated_model,
)

TOPICS = 16
ZIPF_EXPONENT = 1.1
SEED = 0


@dataclass(frozen=True)
class GpuSize:
    """Model shape and corpus size of one benchmark size."""

    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int
    vocab: int
    sequences: int
    seq_len: int
    batch_size: int
    reduced_layers: int
    reduced_sequences: int
    queries: int
    prompt_len: int
    completion_len: int

    def parameters(self) -> int:
        """Parameter count of the Llama model (untied embeddings, no biases)."""
        head_dim = self.hidden // self.heads
        attention = 2 * self.hidden * self.hidden + 2 * self.hidden * self.kv_heads * head_dim
        block = attention + 3 * self.hidden * self.intermediate + 2 * self.hidden
        return self.layers * block + 2 * self.vocab * self.hidden + self.hidden


SIZES = {
    "h200": GpuSize(hidden=2048, intermediate=4096, layers=24, heads=16, kv_heads=4, vocab=32000,
                    sequences=1024, seq_len=512, batch_size=16, reduced_layers=2, reduced_sequences=128,
                    queries=16, prompt_len=48, completion_len=16),
    "tiny": GpuSize(hidden=64, intermediate=128, layers=2, heads=4, kv_heads=2, vocab=512,
                    sequences=48, seq_len=64, batch_size=8, reduced_layers=1, reduced_sequences=16,
                    queries=16, prompt_len=12, completion_len=6),
}  # fmt: skip


def sized(name: str, sequences: int | None = None, batch_size: int | None = None) -> GpuSize:
    """The named size, with the corpus size or batch size overridden where given."""
    size = SIZES[name]
    if sequences is not None:
        size = replace(size, sequences=sequences, reduced_sequences=min(size.reduced_sequences, sequences))
    if batch_size is not None:
        size = replace(size, batch_size=batch_size)
    return size


def word_tokenizer(vocab: int):
    """A word-level tokenizer whose tokens are 'w0' ... 'w{vocab-1}' (ids 0..vocab-1); 'w0' doubles as EOS/pad."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = {f"w{i}": i for i in range(vocab)}
    tokenizer = Tokenizer(models.WordLevel(words, unk_token="w1"))
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer.decoder = decoders.WordPiece(prefix="##")  # joins words with spaces
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, eos_token="w0", pad_token="w0", unk_token="w1")


def build_model(size: GpuSize, target: Path, device: str) -> None:
    """Random-weight Llama model of `size` (seeded, built on `device`), saved in bfloat16 with its tokenizer."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=size.vocab, hidden_size=size.hidden, intermediate_size=size.intermediate,
        num_hidden_layers=size.layers, num_attention_heads=size.heads, num_key_value_heads=size.kv_heads,
        max_position_embeddings=max(2048, size.seq_len), tie_word_embeddings=False, attn_implementation="sdpa",
        bos_token_id=None, eos_token_id=0, pad_token_id=0,
    )  # fmt: skip
    torch.manual_seed(SEED)
    with torch.device(device):
        model = LlamaForCausalLM(config)
    model.to(torch.bfloat16).save_pretrained(target)
    word_tokenizer(size.vocab).save_pretrained(target)
    del model
    if device.startswith("cuda"):
        torch.cuda.empty_cache()


def topic_tokens(size: GpuSize, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Per topic, its ordering of the vocabulary; and the Zipf probabilities of the ordered ranks."""
    orderings = np.stack([rng.permutation(size.vocab) for _ in range(TOPICS)])
    weights = 1.0 / np.arange(1, size.vocab + 1) ** ZIPF_EXPONENT
    return orderings, weights / weights.sum()


def sample(topic: int, count: int, orderings: np.ndarray, probabilities: np.ndarray,
           rng: np.random.Generator) -> list[int]:
    """`count` token ids drawn from one topic."""
    ranks = rng.choice(len(probabilities), size=count, p=probabilities)
    return orderings[topic, ranks].tolist()


def build_data(size: GpuSize) -> tuple[list[list[int]], list[tuple[list[int], list[int]]]]:
    """The corpus (sequence i drawn from topic i mod TOPICS) and one query per topic (cycling if more)."""
    rng = np.random.default_rng(SEED)
    orderings, probabilities = topic_tokens(size, rng)
    corpus = [sample(i % TOPICS, size.seq_len, orderings, probabilities, rng) for i in range(size.sequences)]
    queries = [
        (sample(q % TOPICS, size.prompt_len, orderings, probabilities, rng),
         sample(q % TOPICS, size.completion_len, orderings, probabilities, rng))
        for q in range(size.queries)
    ]  # fmt: skip
    return corpus, queries


def workloads(root: Path) -> tuple[Workload, Workload]:
    """Where `build` puts the main workload (whole model) and the reduced one (first blocks)."""
    return tuple(
        Workload(
            name=name, model_dir=root / model, corpus_jsonl=root / name / "corpus.jsonl",
            queries_jsonl=root / name / "queries.jsonl", corpus_ds=root / name / "corpus-ds",
            queries_ds=root / name / "queries-ds", runs_dir=root / name / "runs",
        )  # fmt: skip
        for name, model in (("main", "model"), ("reduced", "model-reduced"))
    )


def write_data(workload: Workload, corpus: list[list[int]], queries: list[tuple[list[int], list[int]]]) -> None:
    """Write corpus and queries in every tool's format where `workload` points."""
    workload.corpus_jsonl.parent.mkdir(parents=True, exist_ok=True)
    write_jsonl(workload.corpus_jsonl, [{"id": f"seq{i}", "input_ids": ids} for i, ids in enumerate(corpus)])
    write_jsonl(
        workload.queries_jsonl,
        [{"id": f"q{i}", "prompt_ids": p, "completion_ids": c} for i, (p, c) in enumerate(queries)],
    )
    save_corpus_dataset(corpus, workload.corpus_ds)
    save_queries_dataset(queries, workload.queries_ds)


def build(size: GpuSize, root: Path, device: str) -> tuple[Workload, Workload]:
    """The main workload (whole model, bfloat16 checkpoint) and the reduced one (first blocks, float32)."""
    main, reduced = workloads(root)
    build_model(size, main.model_dir, device)
    write_truncated_model(main.model_dir, reduced.model_dir, size.reduced_layers)
    corpus, queries = build_data(size)
    write_data(main, corpus, queries)
    write_data(reduced, corpus[: size.reduced_sequences], queries)
    (root / "size.json").write_text(json.dumps({**asdict(size), "parameters": size.parameters()}, indent=2))
    return main, reduced


def main() -> None:
    parser = argparse.ArgumentParser(description="Build the GPU benchmark's model, reduced model and corpus.")
    parser.add_argument("--size", choices=list(SIZES), default="h200")
    parser.add_argument("--sequences", type=int)
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--root", type=Path, required=True)
    parser.add_argument("--device", default="cpu", help="where the random weights are drawn (cuda is faster)")
    args = parser.parse_args()
    size = sized(args.size, args.sequences, args.batch_size)
    build(size, args.root, args.device)
    print(f"{size.parameters() / 1e9:.2f} B parameters, {size.sequences} x {size.seq_len} tokens -> {args.root}")


if __name__ == "__main__":
    main()
