"""Influence per unit (neuron, head, residual dimension) against independent float64 computations.

Ground truth: autograd per-sequence gradients (tests/exact.py), each layer's EK-FAC matrix G written out densely
as (Q_S ⊗ Q_A) diag(Λ) (Q_S ⊗ Q_A)ᵀ and inverted explicitly with its damping, and unit parameters listed by hand
from the model's definition (which W̄ entries a neuron or a head is), never from wherefrom's unit map.
"""

from __future__ import annotations

import pytest
import torch
from exact import sequence_gradient
from tiny import TEXTS, char_tokenizer, tiny_gpt2, tiny_llama
from transformers import LlamaConfig, LlamaForCausalLM

from wherefrom.allocator import Workspace
from wherefrom.curvature.fitting import fit_curvature
from wherefrom.data.corpus import TrainingSequence
from wherefrom.data.queries import Query
from wherefrom.engine.stream import LayerBatch
from wherefrom.models.loading import prepare_for_influence
from wherefrom.models.selection import select_layers
from wherefrom.models.units import find_unit, unit_map
from wherefrom.options import FitOptions, ScoreOptions
from wherefrom.scoring.contract import sequence_scores, token_contributions
from wherefrom.scoring.scorer import score
from wherefrom.scoring.units import layer_split, split_layout, to_units

TOKENIZER = char_tokenizer()
DAMPING = 1e-3
HIDDEN = 16  # tiny models: hidden 16, 2 heads of 8, MLP width 32 (Llama) or 64 (GPT-2)


def tiny_gqa() -> LlamaForCausalLM:
    """Four query heads of width 4 sharing two key/value heads."""
    torch.manual_seed(0)
    config = LlamaConfig(attn_implementation="eager", vocab_size=32, hidden_size=HIDDEN, intermediate_size=32,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=64, tie_word_embeddings=False)
    return LlamaForCausalLM(config).to(torch.float64).eval()


MODELS = {"llama": lambda: tiny_llama(dtype=torch.float64), "gqa": tiny_gqa,
          "gpt2": lambda: tiny_gpt2(dtype=torch.float64)}


def tokens(n: int = 6) -> list[list[int]]:
    return [TOKENIZER(t)["input_ids"][:16] for t in TEXTS[:n]]


QUERIES = [Query("capital", "", "", (0,), tuple(TOKENIZER("paris is the capital")["input_ids"][1:])),
           Query("cat", "", "", (0,), tuple(TOKENIZER("the cat sat")["input_ids"][1:]))]


@pytest.fixture(scope="module", params=list(MODELS))
def fitted(request):
    model = prepare_for_influence(MODELS[request.param]())
    layers = select_layers(model, "all-linear")
    sequences = [TrainingSequence(i, str(i), 0, len(t), tuple(t)) for i, t in enumerate(tokens())]
    curvature = fit_curvature(model, layers, sequences, FitOptions(fisher="empirical", batch_size=4), quiet=True)
    return request.param, model, layers, sequences, curvature


def explicit_preconditioned(curvature, layers, query_gradient: torch.Tensor) -> torch.Tensor:
    """(G_ℓ + λI)⁻¹ ∇L_q per layer block, with G_ℓ written out densely and inverted in float64: [P]."""
    out, lo = [], 0
    for layer in layers:
        fitted = curvature.layers[layer.name]
        n = layer.shape.out_features * layer.shape.in_dim
        Q = torch.kron(fitted.Q_S, fitted.Q_A)
        G = Q @ torch.diag(fitted.eigenvalues.reshape(-1)) @ Q.T
        inverse = torch.linalg.inv(G + DAMPING * torch.eye(n, dtype=torch.float64))  # explicit, as the test means
        out.append(inverse @ query_gradient[lo:lo + n])
        lo += n
    return torch.cat(out)


def entries(layers, parts: dict[str, tuple[str, list[int]]]) -> torch.Tensor:
    """Positions in the flattened all-layer vec(W̄) (row-major per layer) of the given rows / columns per layer."""
    found, lo = [], 0
    for layer in layers:
        out, width = layer.shape.out_features, layer.shape.in_dim
        if layer.name in parts:
            axis, index = parts[layer.name]
            grid = torch.arange(out * width).reshape(out, width) + lo
            found.append(grid[index].flatten() if axis == "row" else grid[:, index].flatten())
        lo += out * width
    return torch.cat(found)


def by_hand(kind: str, model_name: str) -> tuple[str, dict[str, tuple[str, list[int]]]]:
    """A unit and its W̄ rows/columns, written from the architecture's definition."""
    if model_name == "gpt2":
        p = "transformer.h.1"
        if kind == "neuron":
            return "1:5", {f"{p}.mlp.c_fc": ("row", [5]), f"{p}.mlp.c_proj": ("column", [5])}
        rows = [base + 8 + k for base in (0, 16, 32) for k in range(8)]  # head 1 of q, of k, of v in [q | k | v]
        return "1:head1", {f"{p}.attn.c_attn": ("row", rows), f"{p}.attn.c_proj": ("column", list(range(8, 16)))}
    p = "model.layers.1"
    if kind == "neuron":
        return "1:5", {f"{p}.mlp.gate_proj": ("row", [5]), f"{p}.mlp.up_proj": ("row", [5]),
                       f"{p}.mlp.down_proj": ("column", [5])}
    if model_name == "gqa":  # query head 3 (width 4); its key/value head kv1 is a unit of its own
        return "1:head3", {f"{p}.self_attn.q_proj": ("row", list(range(12, 16))),
                           f"{p}.self_attn.o_proj": ("column", list(range(12, 16)))}
    head = list(range(8, 16))
    return "1:head1", {f"{p}.self_attn.{x}_proj": ("row", head) for x in "qkv"} | \
        {f"{p}.self_attn.o_proj": ("column", head)}


def test_unit_map_names_the_rows_and_columns_the_architecture_defines(fitted):
    name, model, layers, _, _ = fitted
    for kind in ("neuron", "head"):
        unit, parts = by_hand(kind, name)
        got = find_unit(model, layers, unit)
        assert {k: (axis, where.tolist()) for k, (axis, where) in got.items()} == parts
    if name == "gqa":
        kv = find_unit(model, layers, "1:kv1")
        assert {k: w.tolist() for k, (_, w) in kv.items()} == {
            "model.layers.1.self_attn.k_proj": [4, 5, 6, 7], "model.layers.1.self_attn.v_proj": [4, 5, 6, 7]}
    residual = find_unit(model, layers, "1:dim3")
    assert all(axis == "row" and where.tolist() == [3] for axis, where in residual.values())
    assert sorted(k.rsplit(".", 1)[1] for k in residual) == (["c_proj", "c_proj"] if name == "gpt2"
                                                              else ["down_proj", "o_proj"])


def test_row_column_and_unit_splits_sum_exactly_to_the_layer_score(fitted):
    """Rows, columns, and units (neurons over gate/up/down, heads over q/k/v/o) in float64: the units of a layer
    add up to its score, less the entries that belong to no unit (an output projection's bias column)."""
    _, model, layers, _, _ = fitted
    units, residual = unit_map(model, layers), unit_map(model, layers, "residual")
    assert len(residual.layers) == 4  # the two output projections of each of the two blocks
    torch.manual_seed(1)
    for layer in layers:
        out, width = layer.shape.out_features, layer.shape.in_dim
        batch = LayerBatch(torch.randn(3, 7, width, dtype=torch.float64), torch.randn(3, 7, out, dtype=torch.float64))
        V = torch.randn(2, out, width, dtype=torch.float64)
        expected = sequence_scores(V, batch, Workspace())
        for axis in ("row", "column"):
            for with_tokens in (False, True):
                split, token_terms = layer_split(V, split_layout(V, axis), batch, axis, with_tokens, Workspace())
                assert split.shape[-1] == (out if axis == "row" else width)
                torch.testing.assert_close(split.sum(-1), expected, rtol=1e-12, atol=1e-12)
                if with_tokens:
                    torch.testing.assert_close(token_terms, token_contributions(V, batch), rtol=1e-12, atol=1e-12)
        part = units.layers[layer.name]
        split, _ = layer_split(V, split_layout(V, part.axis), batch, part.axis, False, Workspace())
        in_units = to_units(split, part.assignment, split.new_zeros(*split.shape[:-1], len(units)))
        outside = split[..., part.assignment < 0].sum(-1)
        torch.testing.assert_close(in_units.sum(-1) + outside, expected, rtol=1e-12, atol=1e-12)
        assert (part.assignment < 0).sum() == (int(layer.shape.has_bias) if part.axis == "column" else 0)
        if layer.name in residual.layers:  # the residual view: whole rows of the output projections
            part = residual.layers[layer.name]
            split, _ = layer_split(V, split_layout(V, part.axis), batch, part.axis, False, Workspace())
            in_units = to_units(split, part.assignment, split.new_zeros(*split.shape[:-1], len(residual)))
            torch.testing.assert_close(in_units.sum(-1), expected, rtol=1e-12, atol=1e-12)


def test_units_sum_to_the_score_and_match_brute_force(fitted):
    """Every unit's influence on every (query, sequence) equals Σ over its parameters of q̂ ∘ g with the explicit
    (G + λI)⁻¹; the units together (plus the output biases, which belong to no unit) sum to the score."""
    name, model, layers, sequences, curvature = fitted
    n_units = len(unit_map(model, layers))
    result = score(model, TOKENIZER, layers, curvature, QUERIES, sequences,
                   ScoreOptions(damping=DAMPING, batch_size=4, per_unit=n_units, top_k=len(sequences)), quiet=True)
    g = torch.stack([sequence_gradient(model, layers, list(s.input_ids)) for s in sequences])  # [N, P]
    q_hat = torch.stack([explicit_preconditioned(curvature, layers, sequence_gradient(model, layers, list(q.input_ids)))
                         for q in QUERIES])  # [Q, P]
    units = result.units
    assert units.ids.shape[1] == n_units == units.n_units
    tolerance = 1e-6 * float(result.scores.abs().max())  # the split is kept in float32; G⁻¹ is explicit
    for q in range(len(QUERIES)):
        names = [units.names[i] for i in units.ids[q].tolist()]
        for m, row in enumerate(units.rows[q].tolist()):
            split = dict(zip(names, units.split[q, m].double().tolist()))
            no_unit = 0.0
            if name == "gpt2":  # the bias column of each c_proj
                bias = entries(layers, {f"transformer.h.{b}.{x}.c_proj": ("column", [layer_in - 1])
                                        for b in (0, 1) for x, layer_in in (("attn", HIDDEN + 1), ("mlp", 65))})
                no_unit = float(q_hat[q, bias] @ g[row, bias])
            exact = float(q_hat[q] @ g[row])
            assert sum(split.values()) + no_unit == pytest.approx(exact, abs=tolerance)
            assert float(result.scores[q, row]) == pytest.approx(exact, rel=1e-6)
            for kind in ("neuron", "head"):
                unit, parts = by_hand(kind, name)
                where = entries(layers, parts)
                full = next(n for n in names if n.endswith(":" + unit.split(":")[1]) and ".1." in n)
                assert split[full] == pytest.approx(float(q_hat[q, where] @ g[row, where]), abs=tolerance)


def test_positive_influence_and_concentration_are_what_they_say(fitted):
    _, model, layers, sequences, curvature = fitted
    n_units = len(unit_map(model, layers))
    result = score(model, TOKENIZER, layers, curvature, QUERIES, sequences,
                   ScoreOptions(damping=DAMPING, batch_size=4, per_unit=n_units, top_k=len(sequences)), quiet=True)
    units = result.units
    for q in range(len(QUERIES)):
        positive = result.scores[q] > 0
        assert float(units.positive[q]) == pytest.approx(float(result.scores[q][positive].sum()), rel=1e-5)
        rows = units.rows[q]
        by_unit = (units.split[q].double() * positive[rows].double().unsqueeze(-1)).sum(0)
        torch.testing.assert_close(units.influence[q].double(), by_unit, rtol=1e-4, atol=1e-6)
        ranked = units.influence[q].double().sort(descending=True).values
        n = int(units.concentration[q])
        assert ranked[:n].sum() >= units.positive[q] / 2 > ranked[:n - 1].sum()


def test_a_unit_scan_equals_the_brute_force_restricted_scan(fitted):
    name, model, layers, sequences, curvature = fitted
    unit, parts = by_hand("neuron", name)
    result = score(model, TOKENIZER, layers, curvature, QUERIES, sequences,
                   ScoreOptions(damping=DAMPING, batch_size=4, per_token=True, per_layer=True), quiet=True, unit=unit)
    where = entries(layers, parts)
    g = torch.stack([sequence_gradient(model, layers, list(s.input_ids)) for s in sequences])
    for q, query in enumerate(QUERIES):
        q_hat = explicit_preconditioned(curvature, layers, sequence_gradient(model, layers, list(query.input_ids)))
        expected = g[:, where] @ q_hat[where]
        torch.testing.assert_close(result.scores[q], expected, rtol=1e-6, atol=1e-9)  # G⁻¹ explicit: ~1e-8 apart
        for row in range(len(sequences)):
            torch.testing.assert_close(result.token_scores(q, row).sum(), result.scores[q, row], rtol=1e-12, atol=1e-12)
    assert sorted(result.layer_names) == sorted(parts)
