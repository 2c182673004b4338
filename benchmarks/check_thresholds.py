"""What `wherefrom check`'s cosines say about influence scores: measured on tiny models where G is exact.

For each tiny model (Llama / GPT-2, widths, seeds), fit strategy (EK-FAC, K-FAC, diagonal: approximations of
different quality), Fisher (sampled, empirical) and damping (0.01-10 × the per-layer default), every layer's damped
Gauss-Newton block G_ℓℓ + λI is formed exactly in float64 (tests/exact.py) on the fitted sequences, and each
query gradient b is solved exactly, x = (G_ℓℓ + λI)⁻¹ b, and by the fitted curvature, x̃. Per layer and query:

- the Euclidean cosine cos(x̃, x) (the check's number before issue 19);
- the energy cosine cos_A(x̃, x) = x̃ᵀ A x / (‖x̃‖_A ‖x‖_A) = bᵀx̃ / √(x̃ᵀAx̃ · bᵀA⁻¹b), A = G_ℓℓ + λI;
- the Pearson correlation, over held-out training sequences z, of the scores ⟨x̃, ∇L_z⟩ and ⟨x, ∇L_z⟩ that
  they predict (what a user reads).

Prints how well each cosine predicts the Pearson (rank correlation over all cases, and the smallest Pearson
among cases at or above each candidate threshold), and writes the cases to a JSON file. Also measures how far
CG's true energy-norm error is from its delay-1 estimate (the last step's gain), which `check` doubles.

    PYTHONPATH=src python benchmarks/check_thresholds.py [--seeds 4] [--out benchmarks/results/check-thresholds.json]
"""

from __future__ import annotations

import argparse
import json
import random
import string
import sys
from pathlib import Path

import torch

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT / "tests"))
from exact import gauss_newton, sequence_gradient  # noqa: E402
from tiny import TEXTS, char_tokenizer, tiny_gpt2, tiny_llama  # noqa: E402

from wherefrom.curvature.fitting import fit_curvature  # noqa: E402
from wherefrom.data.corpus import TrainingSequence  # noqa: E402
from wherefrom.models.loading import prepare_for_influence  # noqa: E402
from wherefrom.models.selection import select_layers  # noqa: E402
from wherefrom.options import FitOptions  # noqa: E402
from wherefrom.solvers.iterative import conjugate_gradient  # noqa: E402
from wherefrom.solvers.layout import Layout  # noqa: E402
from wherefrom.solvers.preconditioned import curvature_inverse, layer_dampings  # noqa: E402
from wherefrom.solvers.trust import energy_cosine  # noqa: E402

THRESHOLDS = (0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95, 0.98)


def corpus(n: int, seed: int, length: int = 16) -> list[list[int]]:
    """The tests' sentences and random lowercase strings, as token ids (BOS first)."""
    rng = random.Random(seed)
    texts = [*TEXTS, *("".join(rng.choice(string.ascii_lowercase + " ") for _ in range(length)) for _ in range(n))]
    tokenizer = char_tokenizer()
    return [tokenizer(t)["input_ids"][:length] for t in texts[:n]]


def cases(make_model, hidden: int, seed: int) -> list[dict]:
    """Every (strategy, Fisher, damping, layer, query) case of one tiny model."""
    model = prepare_for_influence(make_model(seed=seed, dtype=torch.float64, layers=1, hidden=hidden))
    layers = select_layers(model, "mlp")
    layout = Layout.of(layers)
    fitted = corpus(12, seed)
    held_out = corpus(40, seed + 100)[12:]  # sequences whose scores are compared (not in the fit)
    queries = corpus(16, seed + 200)[12:]
    G = gauss_newton(model, layers, fitted)
    grads = {name: torch.stack([sequence_gradient(model, layers, t) for t in tokens])
             for name, tokens in (("query", queries), ("held_out", held_out))}
    sequences = [TrainingSequence(i, str(i), 0, len(t), tuple(t)) for i, t in enumerate(fitted)]
    rows = []
    for strategy in ("ekfac", "kfac", "diagonal"):
        for fisher in ("sampled", "empirical"):
            curvature = fit_curvature(model, layers, sequences, FitOptions(strategy=strategy, fisher=fisher,
                                                                           batch_size=4, seed=seed), quiet=True)
            defaults = layer_dampings(curvature.layers, layout, None)
            for factor in (0.01, 0.1, 1.0, 10.0):
                lo = 0
                for layer, n in zip(layers, layout.sizes, strict=True):
                    damping = defaults[layer.name] * factor / 0.1  # factor × the layer's mean eigenvalue
                    A = G[lo:lo + n, lo:lo + n] + damping * torch.eye(n, dtype=G.dtype)
                    b, z = grads["query"][:, lo:lo + n], grads["held_out"][:, lo:lo + n]
                    exact = torch.linalg.solve(A, b.T).T
                    shape = (layer.shape.out_features, layer.shape.in_dim)
                    estimate = curvature.layers[layer.name].solve(b.reshape(-1, *shape), damping).reshape(b.shape)
                    for q in range(b.shape[0]):
                        x, xt = exact[q], estimate[q]
                        pearson = float(torch.corrcoef(torch.stack([z @ xt, z @ x]))[0, 1])
                        rows.append({"model": make_model.__name__, "hidden": hidden, "seed": seed,
                                     "strategy": strategy, "fisher": fisher, "damping_factor": factor,
                                     "layer": layer.name.rpartition(".")[2], "query": q,
                                     "cosine": float(xt @ x / (xt.norm() * x.norm())),
                                     "energy_cosine": float(energy_cosine(xt[None], (A @ xt)[None], b[q][None],
                                                                          (b[q] @ x)[None])[0]),
                                     "pearson": pearson})
                    lo += n
    return rows


def error_ratios(make_model, hidden: int, seed: int, iterations: int = 20) -> list[float]:
    """CG's true energy-norm error ‖x - x_k‖_A / ‖x‖_A over its delay-1 estimate √((bᵀx_k - bᵀx_{k-1}) / bᵀx_k),
    for every EK-FAC-preconditioned layer, query and iteration k ≥ 2 where the error is above 1e-3."""
    model = prepare_for_influence(make_model(seed=seed, dtype=torch.float64, layers=1, hidden=hidden))
    layers = select_layers(model, "mlp")
    layout = Layout.of(layers)
    fitted = corpus(12, seed)
    sequences = [TrainingSequence(i, str(i), 0, len(t), tuple(t)) for i, t in enumerate(fitted)]
    curvature = fit_curvature(model, layers, sequences, FitOptions(batch_size=4, seed=seed), quiet=True)
    dampings = layer_dampings(curvature.layers, layout, None)
    G = gauss_newton(model, layers, fitted)
    b = torch.stack([sequence_gradient(model, layers, t) for t in corpus(16, seed + 200)[12:]])
    A = layout.expand(dampings, torch.float64) * torch.eye(layout.size, dtype=torch.float64) + G
    M = curvature_inverse(curvature.layers, layout, dampings)
    solution = conjugate_gradient(lambda v: v @ A, b, iterations, preconditioner=M, quiet=True, blocks=layout.sizes)
    ratios, lo = [], 0
    for i, n in enumerate(layout.sizes):
        exact = torch.linalg.solve(A[lo:lo + n, lo:lo + n], b[:, lo:lo + n].T).T
        total = (b[:, lo:lo + n] * exact).sum(-1)
        energies = solution.energies[:, :, i]
        true = ((total - energies) / total).clamp_min(0).sqrt()
        gain = ((energies[1:] - energies[:-1]).clamp_min(0) / energies[1:].clamp_min(1e-300)).sqrt()
        ratios += [float(true[k, q] / gain[k - 1, q]) for k in range(2, iterations + 1) for q in range(b.shape[0])
                   if true[k, q] > 1e-3 and gain[k - 1, q] > 0]
        lo += n
    return ratios


def spearman(x: list[float], y: list[float]) -> float:
    rank = [torch.tensor(v).argsort().argsort().double() for v in (x, y)]
    return float(torch.corrcoef(torch.stack(rank))[0, 1])


def summary(rows: list[dict]) -> str:
    """How each cosine predicts the Pearson, as Markdown."""
    pearson = [r["pearson"] for r in rows]
    lines = [f"{len(rows)} cases (layer × query); Spearman of each cosine with the scores' Pearson: "
             + ", ".join(f"{key} {spearman([r[key] for r in rows], pearson):.3f}" for key in ("cosine", "energy_cosine")),
             "", "| threshold t | cases with cosine ≥ t | their Pearson: min / 5th pct / median | cases with energy "
                 "cosine ≥ t | their Pearson: min / 5th pct / median | energy cosine < t: Pearson median / 95th pct "
                 "/ max |", "| --- | --- | --- | --- | --- | --- |"]
    for t in THRESHOLDS:
        cells = []
        for key in ("cosine", "energy_cosine"):
            chosen = torch.tensor([r["pearson"] for r in rows if r[key] >= t])
            cells += [str(len(chosen)), "-" if not len(chosen) else
                      f"{float(chosen.min()):.3f} / {float(chosen.quantile(0.05)):.3f} / {float(chosen.median()):.3f}"]
        below = torch.tensor([r["pearson"] for r in rows if r["energy_cosine"] < t])
        cells.append("-" if not len(below) else f"{float(below.median()):.3f} / {float(below.quantile(0.95)):.3f} / "
                                                 f"{float(below.max()):.3f}")
        lines.append(f"| {t} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "benchmarks" / "results" / "check-thresholds.json")
    parser.add_argument("--seeds", type=int, default=4, help="model seeds per architecture and width")
    args = parser.parse_args()
    torch.set_num_threads(1)
    rows = []
    for make_model in (tiny_llama, tiny_gpt2):
        for hidden in (8, 12):
            for seed in range(args.seeds):
                rows += cases(make_model, hidden, seed)
    ratios = torch.tensor([r for make_model in (tiny_llama, tiny_gpt2) for hidden in (8, 12)
                           for seed in range(args.seeds) for r in error_ratios(make_model, hidden, seed)])
    quantiles = ratios.quantile(torch.tensor([0.5, 0.9, 0.95], dtype=ratios.dtype)).tolist()
    text = summary(rows) + (f"\n\nCG's energy-norm error against its delay-1 estimate (EK-FAC preconditioner, default "
                            f"damping, {len(ratios)} iterations with error > 1e-3): ratio median {quantiles[0]:.2f}, "
                            f"90th percentile {quantiles[1]:.2f}, 95th {quantiles[2]:.2f}, max {float(ratios.max()):.2f}")
    print(text)
    command = f"PYTHONPATH=src python benchmarks/check_thresholds.py --seeds {args.seeds}"
    columns = list(rows[0])
    compact = [[round(v, 4) if isinstance(v, float) else v for v in row.values()] for row in rows]
    args.out.write_text(json.dumps({"command": command, "summary": text, "columns": columns, "cases": compact},
                                   separators=(",", ":")) + "\n")
    args.out.with_suffix(".md").write_text(f"`{command}`\n\n{text}\n")


if __name__ == "__main__":
    main()
