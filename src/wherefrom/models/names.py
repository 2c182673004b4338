"""How Hugging Face families name their blocks' parts: the one place that says which names are MLP, attention,
router, embedding or norm, read by the presets (`selection.py`) and the parameter counts (`coverage.py`)."""

from __future__ import annotations

import re

# MLP blocks: Llama/Qwen/SmolLM (mlp.*_proj), GPT-2 (mlp.c_fc), NeoX (mlp.dense_*), OPT (fc1/fc2), BERT-style
# encoders used as decoders (intermediate.dense, output.dense outside attention), and mixture-of-experts blocks
# (block_sparse_moe, moe, feed_forward: routed and shared experts).
MLP = re.compile(r"(^|\.)(mlp|feed_forward|ffn|ffns|block_sparse_moe|moe|experts|intermediate)\.|(^|\.)fc[12](\.|$)"
                 r"|(^|\.)(?<!attention\.)output\.dense(\.|$)")
ATTENTION = re.compile(r"(^|\.)(self_attn|attn|attention|self_attention|crossattention|encoder_attn)\.")
ROUTER_LEAVES = ("gate", "router", "shared_expert_gate", "router_proj")
OUTPUT_HEADS = ("lm_head", "embed_out", "output")
# Linear modules whose parameters the model also uses outside their own forward, where no hook can see them: the
# state-space (Mamba) mixers' time-step projection (its bias is subtracted from the output and re-added inside the
# selective scan, and some paths multiply by its weight directly). Never tracked.
OUTSIDE_FORWARD = ("dt_proj",)
# The encoders of other modalities in multimodal models (vision, audio): a text completion never runs them, so no
# preset tracks them (a regular expression still may).
OTHER_MODALITIES = re.compile(r"(^|\.)(vision_tower|vision_model|vision_encoder|visual|vision|image_encoder|"
                              r"audio_tower|audio_model|audio_encoder|speech_encoder|multi_modal_projector)\.")
EMBEDDINGS = re.compile(r"embed|(^|\.)(wte|wpe)\.")
NORMS = re.compile(r"norm|^ln_|^ln$")  # matched against the parameter's own module (its last part but one)


def is_router_name(name: str) -> bool:
    """Whether a module (or parameter, by its module's name) is, or is inside, a mixture-of-experts router of an MLP
    block (``mlp.gate``, ``mlp.router``, ``mlp.router.classifier``)."""
    parts = name.split(".")
    module = parts[:-1] if parts[-1] in ("weight", "bias") else parts
    inside = module[next((i for i, part in enumerate(module) if MLP.search(part + ".")), len(module)) + 1:]
    return any(part in ROUTER_LEAVES or "router" in part for part in inside)
