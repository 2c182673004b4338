"""Normalised influence (--normalize) against a brute-force cosine: autograd gradients and an explicit float64
inverse of the damped EK-FAC matrix each layer stands for."""

from __future__ import annotations

import json

import torch
from exact import kronecker_matrix, sequence_gradient
from tiny import TEXTS, char_tokenizer, tiny_llama

from wherefrom.curvature.fitting import fit_curvature
from wherefrom.data.corpus import TrainingSequence
from wherefrom.data.queries import Query
from wherefrom.models.loading import prepare_for_influence
from wherefrom.models.selection import select_layers
from wherefrom.options import FitOptions, ScoreOptions
from wherefrom.scoring.results import ScoreResult
from wherefrom.scoring.scorer import score

TOKENIZER = char_tokenizer()


def test_normalised_scores_equal_the_cosine_in_the_inverse_curvature_metric(tmp_path):
    model = prepare_for_influence(tiny_llama(dtype=torch.float64))
    layers = select_layers(model, "mlp")
    corpus = [TOKENIZER(t)["input_ids"][:18] for t in TEXTS]
    sequences = [TrainingSequence(i, str(i), 0, len(t), tuple(t)) for i, t in enumerate(corpus)]
    query_tokens = [TOKENIZER(t)["input_ids"] for t in ("paris is the capital", "the cat sat on", "one plus one")]
    queries = [Query(str(i), "", "", tuple(t[:3]), tuple(t[3:])) for i, t in enumerate(query_tokens)]
    curvature = fit_curvature(model, layers, sequences, FitOptions(fisher="empirical", batch_size=3), quiet=True)
    result = score(model, TOKENIZER, layers, curvature, queries, sequences, ScoreOptions(batch_size=3, normalize=True),
                   quiet=True)

    # Brute force: (G_ℓ + λ_ℓ I)⁻¹ per layer by torch.linalg.inv, with λ_ℓ = 0.1 × mean eigenvalue (the default).
    inverses = []
    for layer in layers:
        G = kronecker_matrix(curvature.layers[layer.name]).double()
        damping = 0.1 * float(curvature.layers[layer.name].eigenvalues.double().mean())
        inverses.append(torch.linalg.inv(G + damping * torch.eye(G.shape[0], dtype=torch.float64)))
    M = torch.block_diag(*inverses)
    q = torch.stack([sequence_gradient(model, layers, t, first_target=3) for t in query_tokens])
    z = torch.stack([sequence_gradient(model, layers, t) for t in corpus])
    influence = q @ M @ z.T
    expected = influence / torch.outer((q @ M * q).sum(1).sqrt(), (z @ M * z).sum(1).sqrt())

    torch.testing.assert_close(result.scores, influence, rtol=1e-9, atol=1e-12)  # the raw influence is kept
    torch.testing.assert_close(result.cosine, expected, rtol=1e-9, atol=1e-12)
    assert result.cosine.abs().max() <= 1 + 1e-12
    assert not torch.equal(result.cosine.argsort(1), result.scores.argsort(1))  # the two rank differently here

    result.save(tmp_path, top_k=4)
    top = [json.loads(line)["top"] for line in (tmp_path / "results.jsonl").read_text().splitlines()]
    for i, entries in enumerate(top):
        assert [e["row"] for e in entries] == expected[i].argsort(descending=True)[:4].tolist()
        assert [e["score"] for e in entries] == [float(result.scores[i, e["row"]]) for e in entries]
    loaded = ScoreResult.load(tmp_path)
    assert loaded.ranked_by == "cosine"
    torch.testing.assert_close(loaded.cosine, expected.float())
