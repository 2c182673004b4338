"""A representative set of transformers' causal-LM families, each built tiny from a config, against independent
float64 ground truth: the engine's per-sequence gradients against plain autograd of the tracked parameters (the
experts' slices of fused 3-D parameters included), and EK-FAC's Λ against the exact diagonal of each layer's
empirical-Fisher block in its K-FAC eigenbasis. The full sweep over every architecture is
`benchmarks/architectures.py` (docs/architectures.md)."""

from __future__ import annotations

import pytest
import torch
from exact import kronecker_basis, sequence_gradient
from transformers import AutoConfig, AutoModelForCausalLM

from wherefrom.curvature.covariance import CovarianceAccumulator
from wherefrom.curvature.fitting import fit_curvature
from wherefrom.data.batching import make_batches
from wherefrom.data.corpus import TrainingSequence
from wherefrom.data.queries import Query
from wherefrom.engine.execution import start_execution
from wherefrom.engine.stream import Labels, stream
from wherefrom.models.loading import prepare_for_influence
from wherefrom.models.selection import select_layers
from wherefrom.options import FitOptions
from wherefrom.scoring.query_gradients import query_gradients

SIZES = dict(vocab_size=40, hidden_size=16, intermediate_size=24, num_hidden_layers=2, num_attention_heads=2,
             num_key_value_heads=2, max_position_embeddings=64)
MOE = dict(num_experts_per_tok=2)
ARCHITECTURES: dict[str, dict] = {
    "llama": {},
    "gpt2": dict(n_embd=16, n_layer=2, n_head=2, n_positions=64, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0),
    "gpt_neox": dict(rotary_pct=0.5),
    "opt": dict(ffn_dim=24, word_embed_proj_dim=16),  # flattens hidden states to [B·T, H] before its MLP
    "gemma3_text": dict(head_dim=8, layer_types=["sliding_attention", "full_attention"], sliding_window=4),
    "phi3": dict(pad_token_id=0),  # fused gate_up_proj
    "qwen3": dict(head_dim=8),
    "mixtral": dict(num_local_experts=4, **MOE),
    "qwen3_moe": dict(num_experts=4, moe_intermediate_size=8, decoder_sparse_step=1, head_dim=8, **MOE),
    "olmoe": dict(num_experts=4, **MOE),
    "gpt_oss": dict(num_local_experts=4, head_dim=8, layer_types=["sliding_attention", "full_attention"], **MOE),
    "deepseek_v3": dict(n_routed_experts=4, moe_intermediate_size=8, n_shared_experts=1, first_k_dense_replace=1,
                        kv_lora_rank=8, q_lora_rank=8, qk_rope_head_dim=4, qk_nope_head_dim=4, v_head_dim=8,
                        head_dim=4, n_group=1, topk_group=1, **MOE),
    "qwen2_moe": dict(num_experts=4, moe_intermediate_size=8, shared_expert_intermediate_size=8, **MOE),
    "llama4_text": dict(num_local_experts=4, num_experts_per_tok=1, intermediate_size_mlp=24, head_dim=8,
                        interleave_moe_layer_step=1, no_rope_layers=[1, 1], layer_types=["full_attention"] * 2),
    # zero-computation experts: their slots are sent to real experts with weight 0, so a token can reach one twice
    "longcat_flash": dict(num_layers=2, ffn_hidden_size=24, expert_ffn_hidden_size=8, n_routed_experts=4,
                          zero_expert_num=4, moe_topk=3, kv_lora_rank=8, q_lora_rank=8, qk_rope_head_dim=4,
                          qk_nope_head_dim=4, v_head_dim=8, head_dim=4),
    "jamba": dict(num_experts=4, expert_layer_period=2, expert_layer_offset=1, attn_layer_period=2,
                  attn_layer_offset=1, mamba_d_state=4, mamba_d_conv=2, mamba_expand=1, mamba_dt_rank=4,
                  use_mamba_kernels=False, **MOE),  # hybrid: state-space (mamba) and attention blocks, MoE MLPs
}
FLOAT32_ROUTERS = {"deepseek_v3", "longcat_flash"}  # its router casts x and W to float32: those gradients hold float32 round-off
MOE_FAMILIES = {"longcat_flash", "mixtral", "qwen3_moe", "olmoe", "gpt_oss", "deepseek_v3", "qwen2_moe", "llama4_text", "jamba"}
TOKENS = [[3, 5, 7, 9, 3, 2, 8, 11, 4, 6], [2, 6, 3, 9, 12, 5, 7], [4, 4, 8, 1, 9, 13, 2, 5, 10], [7, 3, 3, 12, 5, 6]]


def build(kind: str) -> torch.nn.Module:
    """The tiny float64 model of ``kind``; fused experts run transformers' eager loop (its grouped kernels have no
    float64), which the autograd reference then uses while wherefrom's capture runs its own routed loop."""
    sizes = {k: v for k, v in SIZES.items() if kind != "gpt2" or k == "vocab_size"}
    config = AutoConfig.for_model(kind, **sizes, **ARCHITECTURES[kind])
    config._experts_implementation = "eager"
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config).to(torch.float64).eval()
    with torch.no_grad():  # random biases, so that every bias column is tested (several families init them at 0)
        for name, p in model.named_parameters():
            if name.endswith("bias") and p.dim() <= 2:
                p.normal_(0, 0.05)
    return prepare_for_influence(model)


@pytest.mark.parametrize("kind", ARCHITECTURES)
def test_per_sequence_gradients_equal_autograd(kind):
    model = build(kind)
    # LongCat's router reads its classifier's weight directly (refused under all-linear): its experts are checked
    layers = select_layers(model, "all-linear" if kind in MOE_FAMILIES - {"longcat_flash"} else "mlp")
    if kind in MOE_FAMILIES:
        assert any(layer.expert is not None for layer in layers), "the routed experts must be tracked"
    queries = [Query(str(i), "", "", tuple(t[:3]), tuple(t[3:])) for i, t in enumerate(TOKENS)]
    got = query_gradients(model, layers, queries, batch_size=3, quiet=True)  # padded batches of mixed lengths
    for i, tokens in enumerate(TOKENS):
        expected = sequence_gradient(model, layers, tokens, first_target=3)
        flat = torch.cat([got.dense(layer.name)[i].reshape(-1) for layer in layers])
        tolerance = 1e-6 if kind in FLOAT32_ROUTERS else 1e-9
        torch.testing.assert_close(flat, expected, rtol=tolerance, atol=tolerance * float(expected.abs().max()))


@pytest.mark.parametrize("kind", ["mixtral", "gpt_oss", "deepseek_v3", "llama4_text", "opt"])
def test_ekfac_eigenvalues_are_the_exact_diagonal_of_each_layer_block(kind):
    """Λ of every layer, each expert's included, is diag(Qᵀ G Q) of that layer's exact empirical-Fisher block."""
    model = build(kind)
    layers = select_layers(model, "mlp")
    sequences = [TrainingSequence(i, str(i), 0, len(t), tuple(t)) for i, t in enumerate(TOKENS)]
    fitted = fit_curvature(model, layers, sequences, FitOptions(strategy="ekfac", fisher="empirical", batch_size=3),
                           quiet=True)
    grads = torch.stack([sequence_gradient(model, layers, t) for t in TOKENS])
    lo = 0
    for layer in layers:
        n = layer.shape.out_features * layer.shape.in_dim
        g = grads[:, lo:lo + n]
        lo += n
        Q = kronecker_basis(fitted.layers[layer.name])
        G = g.T @ g / len(TOKENS)
        torch.testing.assert_close(fitted.layers[layer.name].eigenvalues.reshape(-1).cpu(), (Q.T @ G @ Q).diagonal(),
                                   rtol=1e-8, atol=1e-12 * float(G.diagonal().abs().max() + 1e-30))


@pytest.mark.parametrize("kind", ["mixtral", "qwen3_moe", "gpt_oss", "deepseek_v3", "qwen2_moe", "llama4_text"])
def test_the_default_preset_tracks_every_expert_and_shared_expert_and_no_router(kind):
    model = build(kind)
    names = [layer.name for layer in select_layers(model, "mlp")]
    experts = select_layers(model, "experts")
    modules = {layer.module_name: layer.module for layer in experts}
    assert experts and all(layer.name in names for layer in experts)
    assert len(experts) == 2 * sum(module.down_proj.shape[0] for module in modules.values())
    assert not any(name.endswith((".gate", ".router")) for name in names)
    assert select_layers(model, "router")


@pytest.mark.parametrize("kind", ["mixtral", "gpt_oss"])
def test_an_experts_input_covariance_sums_only_the_tokens_routed_to_it(kind):
    """A_e = Σ ā āᵀ over the predicting tokens routed to expert e (ā = (x, 1) with a bias), divided by the number of
    predicting tokens, from the routing the model itself computed (a hook on its experts module, no wherefrom)."""
    model = build(kind)
    layers = [layer for layer in select_layers(model, "experts") if layer.weight != "down_proj"]
    seen: list[tuple[torch.Tensor, torch.Tensor]] = []
    experts = layers[0].module
    handle = experts.register_forward_pre_hook(lambda _m, args: seen.append((args[0].detach(), args[1])))
    with torch.no_grad():
        for tokens in TOKENS:
            model(input_ids=torch.tensor([tokens]))
    handle.remove()
    per_layer = len(seen) // len(TOKENS)
    accumulator = CovarianceAccumulator(layers, start_execution(model))
    batches = list(make_batches(TOKENS, [1] * len(TOKENS), 3))
    for _ in stream(model, layers, batches, len(batches), Labels("data"), accumulator, "covariances", quiet=True):
        pass
    n_tokens = sum(len(t) - 1 for t in TOKENS)
    for layer in (layer for layer in layers if layer.module is experts):
        expected = torch.zeros(layer.shape.in_dim, layer.shape.in_dim, dtype=torch.float64)
        for (hidden, routing), tokens in zip(seen[::per_layer], TOKENS):
            for t in range(len(tokens) - 1):  # predicting tokens
                if layer.expert in routing[t].tolist():
                    a = torch.cat([hidden[t], torch.ones(1, dtype=hidden.dtype)]) if layer.shape.has_bias else hidden[t]
                    expected += torch.outer(a, a)
        (A_sum,), _ = accumulator.pop(layer.name)  # the sums; A = Σ ā āᵀ / n_tokens
        assert accumulator.n_tokens == n_tokens
        torch.testing.assert_close(A_sum.double() / n_tokens, expected / n_tokens, rtol=1e-6, atol=1e-12)


def test_an_expert_no_fitted_token_reached_contributes_nothing_instead_of_nan():
    """Λ = 0 (no routed token in the fitted corpus) gives λ = ∞ under the default damping: the preconditioned query
    is 0 there, not 0/0."""
    from wherefrom.curvature.preconditioner import LayerCurvature

    unreached = LayerCurvature(torch.eye(3, dtype=torch.float64), torch.eye(2, dtype=torch.float64),
                               torch.zeros(2, 3, dtype=torch.float64))
    ds, a = torch.randn(1, 4, 2, dtype=torch.float64), torch.randn(1, 4, 3, dtype=torch.float64)
    assert unreached.damping(None) == float("inf")
    assert torch.equal(unreached.precondition(ds, a), torch.zeros(1, 2, 3, dtype=torch.float64))
    assert torch.isfinite(unreached.precondition(ds, a, damping=0.5)).all()  # an absolute λ is used as given


@pytest.mark.parametrize("kind", ["mixtral", "gpt_oss"])
def test_the_gauss_newton_product_of_the_check_goes_through_experts(kind):
    """`check`'s G v (forward- and reverse-mode autodiff through the model) equals the explicit float64 Gauss-Newton
    matrix on the experts' slices, whatever kernel transformers is set to (its grouped kernels have no
    forward-mode derivative)."""
    from exact import gauss_newton

    from wherefrom.solvers.ggn import GaussNewton

    model = build(kind)
    layers = select_layers(model, "experts")[:4]
    G = gauss_newton(model, layers, TOKENS[:2])
    model.config._experts_implementation = "grouped_mm"
    V = torch.randn(3, G.shape[0], dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    expected = V @ G  # the softmax Hessian is applied in float32 (the precision policy): agreement to ~1e-7
    torch.testing.assert_close(GaussNewton(model, layers, TOKENS[:2], batch_size=2)(V), expected, rtol=0,
                               atol=1e-6 * float(expected.abs().max()))


@pytest.mark.parametrize("kind", ["mixtral", "gpt_oss", "qwen3_moe"])
def test_the_routed_loop_computes_what_every_transformers_kernel_computes(kind):
    """wherefrom's capture runs `routed_forward` in place of the experts' kernel: its output equals the eager loop's,
    batched_mm's and grouped_mm's (float32, where the grouped kernels run) on the same routing."""
    from wherefrom.models.experts import routed_forward

    model = build(kind).float()
    experts = next(m for m in model.modules() if hasattr(m, "gate_up_proj") and hasattr(m, "has_gate"))
    hidden = torch.randn(12, model.config.hidden_size, generator=torch.Generator().manual_seed(0))
    index = torch.stack([torch.randperm(4, generator=torch.Generator().manual_seed(i))[:2] for i in range(12)])
    weights = torch.softmax(torch.randn(12, 2, generator=torch.Generator().manual_seed(1)), dim=-1)
    ours = routed_forward(experts, hidden, index, weights, lambda *_: None)
    for kernel in ("eager", "batched_mm", "grouped_mm"):
        model.config._experts_implementation = kernel
        torch.testing.assert_close(ours, experts(hidden, index, weights), rtol=1e-5, atol=1e-6, msg=kernel)
