"""The demo's causal LM: a small Llama-style transformer built from a config, dense or with mixture-of-experts MLPs
(Mixtral: ``experts`` experts, ``experts_per_token`` routed per token, each expert as wide as the dense MLP divided
by ``experts_per_token``, so a token goes through as many MLP weights as in the dense model)."""

from __future__ import annotations

import torch
from transformers import LlamaConfig, LlamaForCausalLM, MixtralConfig, MixtralForCausalLM, PreTrainedTokenizerFast

from wherefrom.synthetic.config import ModelConfig


def build_model(config: ModelConfig, tokenizer: PreTrainedTokenizerFast, seed: int
                ) -> LlamaForCausalLM | MixtralForCausalLM:
    """A freshly initialised model sized by ``config``, with the tokenizer's vocabulary and special tokens."""
    shared = dict(
        vocab_size=len(tokenizer),
        hidden_size=config.hidden_size,
        num_hidden_layers=config.num_layers,
        num_attention_heads=config.num_heads,
        num_key_value_heads=config.num_heads,
        max_position_embeddings=config.context_length,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    if config.experts:
        return MixtralForCausalLM(MixtralConfig(**shared, num_local_experts=config.experts,
                                                num_experts_per_tok=config.experts_per_token,
                                                intermediate_size=config.intermediate_size // config.experts_per_token))
    return LlamaForCausalLM(LlamaConfig(**shared, intermediate_size=config.intermediate_size))
