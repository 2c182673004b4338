"""Influence against the experiment it predicts, on a LoRA adapter (the set-up of docs/fact-tracing.md, "Why a
fact's own carrier can rank last"): a small step θ + ε (G + λI)⁻¹ ∇log p(z) on a training sequence z changes the
query's log p(completion) by ε·I(z, q). The step uses an explicit float64 inverse of each layer's damped EK-FAC
matrix and autograd gradients; the change is measured by central finite differences of the model's own
log-probability, so a sign or scale error anywhere in the scoring chain shows."""

from __future__ import annotations

import pytest
import torch
from exact import kronecker_matrix, sequence_gradient
from tiny import TEXTS, char_tokenizer, tiny_llama

from wherefrom.curvature.fitting import fit_curvature
from wherefrom.data.corpus import TrainingSequence
from wherefrom.data.queries import Query
from wherefrom.models.loading import prepare_for_influence
from wherefrom.models.selection import select_layers
from wherefrom.options import FitOptions, ScoreOptions
from wherefrom.scoring.scorer import score

TOKENIZER = char_tokenizer()


def completion_log_prob(model: torch.nn.Module, prompt: list[int], completion: list[int]) -> float:
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([prompt + completion])).logits[0, len(prompt) - 1:-1]
        return float(torch.log_softmax(logits, -1).gather(1, torch.tensor(completion)[:, None]).sum())


def test_influence_is_the_change_of_the_completion_log_prob_after_a_preconditioned_step():
    peft = pytest.importorskip("peft")
    model = peft.get_peft_model(tiny_llama(dtype=torch.float64), peft.LoraConfig(
        r=4, target_modules=["q_proj", "v_proj", "up_proj", "down_proj"], init_lora_weights=False))
    model = prepare_for_influence(model)
    layers = select_layers(model, "all-linear")
    assert {layer.name.split(".")[-2] for layer in layers} == {"lora_A", "lora_B"}
    assert not any(layer.shape.has_bias for layer in layers)
    corpus = [TOKENIZER(t)["input_ids"][:18] for t in TEXTS]
    sequences = [TrainingSequence(i, str(i), 0, len(t), tuple(t)) for i, t in enumerate(corpus)]
    prompts = [TOKENIZER(p)["input_ids"] for p in ("paris is the capital of", "the cat sat")]
    completions = [TOKENIZER(c, add_special_tokens=False)["input_ids"] for c in (" france.", " on the mat.")]
    queries = [Query(str(i), "", "", tuple(p), tuple(c)) for i, (p, c) in enumerate(zip(prompts, completions))]
    curvature = fit_curvature(model, layers, sequences, FitOptions(fisher="empirical", batch_size=4), quiet=True)
    result = score(model, TOKENIZER, layers, curvature, queries, sequences, ScoreOptions(batch_size=4), quiet=True)

    inverses = []
    for layer in layers:
        G = kronecker_matrix(curvature.layers[layer.name]).double()
        damping = 0.1 * float(curvature.layers[layer.name].eigenvalues.double().mean())
        inverses.append(torch.linalg.inv(G + damping * torch.eye(G.shape[0], dtype=torch.float64)))
    weights = [getattr(layer.module, layer.weight) for layer in layers]

    def completion_log_prob_at(steps: list[torch.Tensor], t: float, i: int) -> float:
        """log p(completion | prompt) of query i with the tracked weights moved by t × steps."""
        with torch.no_grad():
            for w, s in zip(weights, steps, strict=True):
                w.add_(t * s)
        value = completion_log_prob(model, prompts[i], completions[i])
        with torch.no_grad():
            for w, s in zip(weights, steps, strict=True):
                w.sub_(t * s)
        return value

    measured = torch.zeros_like(result.scores)
    for n, tokens in enumerate(corpus):
        gradient = sequence_gradient(model, layers, tokens)  # ∇ of the summed NLL: the step raises log p(z)
        step = -torch.cat([M @ g for M, g in
                           zip(inverses, gradient.split([w.numel() for w in weights]), strict=True)])
        steps = [s.reshape(w.shape) for s, w in zip(step.split([w.numel() for w in weights]), weights, strict=True)]
        eps = 3e-2 / float(step.norm())  # ‖Δθ‖ = 0.03 against ‖θ‖ ≈ 8: above the roundoff, inside the linear range
        for i in range(len(queries)):
            f = [completion_log_prob_at(steps, k * eps, i) for k in (2, 1, -1, -2)]
            measured[i, n] = (-f[0] + 8 * f[1] - 8 * f[2] + f[3]) / (12 * eps)  # 4-point central difference

    assert (result.scores > 0).any() and (result.scores < 0).any()  # both signs occur, so a flip would show
    torch.testing.assert_close(result.scores, measured, rtol=1e-2, atol=1e-3)
