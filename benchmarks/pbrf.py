"""PBRF ground truth on the demo model: Pearson per query between the proximal Bregman response and each estimate.

For a handful of training sequences z and demo queries q, PBRF (wherefrom.solvers.pbrf) is solved by L-BFGS on
the tracked MLP layers, with the Bregman term over the whole demo corpus and the same per-layer damping λ_ℓ as
the estimates (0.1 × EK-FAC's mean eigenvalue). Its response (f_q(θ^s(ε)) - f_q(θ_s)) / ε is compared with
I(z, q) = ∇L_qᵀ (G̃ + λI)⁻¹ ∇L_z for every strategy (identity, diagonal, kfac, ekfac), LiSSA and CG on the full
Gauss-Newton Hessian, and EK-FAC refined by CG (`--refine cg`). Optionally also the `--damping auto` curve.

    PYTHONPATH=src python benchmarks/pbrf.py                   # reduced demo, ~10-20 min on 2 shared cores
    PYTHONPATH=src python benchmarks/pbrf.py --damping-curve   # and the --damping auto curve (plot in docs/)
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from wherefrom.curvature.fitting import fit_curvature
from wherefrom.data.corpus import build_sequences
from wherefrom.data.queries import read_queries
from wherefrom.data.records import read_records
from wherefrom.models.loading import load_model, prepare_for_influence
from wherefrom.models.selection import select_layers
from wherefrom.options import FitOptions, ScoreOptions
from wherefrom.solvers.damping import damping_curve, pearson_rows
from wherefrom.solvers.ggn import GaussNewton
from wherefrom.solvers.iterative import conjugate_gradient, damped, largest_eigenvalue, lissa
from wherefrom.solvers.layout import Layout
from wherefrom.solvers.pbrf import language_model_problem, pbrf_response
from wherefrom.solvers.preconditioned import curvature_inverse, layer_dampings
from wherefrom.solvers.refine import refine_solution
from wherefrom.solvers.sample import as_queries, flat_gradients, sample_sequences
from wherefrom.synthetic.cache import load_or_train
from wherefrom.synthetic.config import DemoConfig, reduced_config

STRATEGIES = ("identity", "diagonal", "kfac", "ekfac")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="the full demo instead of the reduced one")
    parser.add_argument("--sequences", type=int, default=8, help="training sequences z (one PBRF solve each)")
    parser.add_argument("--queries", type=int, default=6, help="demo queries q")
    parser.add_argument("--epsilon", type=float, default=1e-4, help="upweighting ε (small: near the linear regime)")
    parser.add_argument("--pbrf-iterations", type=int, default=150)
    parser.add_argument("--lissa-iterations", type=int, default=400)
    parser.add_argument("--damping-curve", action="store_true", help="also the --damping auto curve")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/pbrf.json"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    started = time.time()

    config = DemoConfig() if args.full else reduced_config()
    folder = load_or_train(config, num_threads=args.threads)
    loaded = load_model(folder)
    model = prepare_for_influence(loaded.model.double())  # float64: PBRF's responses are O(ε)
    layers = select_layers(model, "mlp")
    layout = Layout.of(layers)
    sequences = build_sequences(read_records(folder / "corpus.jsonl"), loaded.tokenizer,
                                config.model.context_length, pack=False)
    all_queries = read_queries(folder / "queries.jsonl", loaded.tokenizer, config.model.context_length)
    queries = all_queries[::max(1, len(all_queries) // args.queries)][:args.queries]  # spread over the kinds
    upweighted = sample_sequences(sequences, args.sequences, seed=3)
    epsilon = args.epsilon

    fitted = {s: fit_curvature(model, layers, sequences, FitOptions(strategy=s, batch_size=16)) for s in STRATEGIES}
    dampings = layer_dampings(fitted["ekfac"].layers, layout, None)  # the same λ_ℓ for every method
    damping = layout.expand(dampings, torch.float64)
    b = flat_gradients(model, layers, queries, 16)  # ∇L_q
    g = flat_gradients(model, layers, as_queries(upweighted), 16)  # ∇L_z
    estimates = {s: curvature_inverse(fitted[s].layers, layout, dampings)(b) @ g.T for s in STRATEGIES}

    G = GaussNewton(model, layers, [s.input_ids for s in sequences], batch_size=32)
    A = damped(G, damping)
    scale = 1.5 * largest_eigenvalue(A, layout.size, torch.float64)
    lissa_x = lissa(lambda x, step: G.minibatch(x, step) + damping * x, b, scale, args.lissa_iterations).x
    estimates["lissa"] = lissa_x @ g.T
    cg = conjugate_gradient(A, b, 30, preconditioner=curvature_inverse(fitted["ekfac"].layers, layout, dampings))
    estimates["cg (full GGN, 30 it.)"] = cg.x @ g.T
    refined = refine_solution(model, layers, fitted["ekfac"], b, sequences, None, 10, 64, 16)
    estimates["ekfac + cg refine (10 it., 64 seq.)"] = refined.x @ g.T

    data = language_model_problem(model, layers, [s.input_ids for s in sequences], batch_size=32)
    measured = language_model_problem(model, layers, [q.input_ids for q in queries],
                                      [len(q.prompt_ids) for q in queries], batch_size=1)
    f_s = -measured.losses(data.theta)
    responses = []
    for i, z in enumerate(upweighted):
        delta = pbrf_response(data, language_model_problem(model, layers, [z.input_ids]), damping, epsilon,
                              args.pbrf_iterations, description=f"PBRF {i + 1}/{len(upweighted)}")
        with torch.no_grad():
            responses.append((-measured.losses(data.theta + delta) - f_s) / epsilon)
    pbrf = torch.stack(responses, dim=1)  # [Q, Z]

    table = {name: pearson_rows(scores, pbrf).tolist() for name, scores in estimates.items()}
    result = {"demo": "full" if args.full else "reduced", "n_corpus": len(sequences), "epsilon": epsilon,
              "queries": [q.id for q in queries], "sequences": [z.record_id for z in upweighted],
              "pearson_with_pbrf": table, "cg_residual": float(cg.residuals[-1].max()),
              "refine_residual": float(refined.residuals[-1].max()), "lissa_scale": scale,
              "seconds": round(time.time() - started, 1)}
    if args.damping_curve:
        curve = damping_curve(model, layers, fitted["ekfac"], queries, sequences, ScoreOptions(batch_size=16))
        result["damping_curve"] = {"candidates": curve.candidates, "agreement": curve.agreement,
                                   "reference_damping": curve.reference_damping,
                                   "reference_residual": curve.reference_residual, "chosen": curve.chosen}
        result["mean_default_damping"] = sum(dampings.values()) / len(dampings)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(markdown(result))


def markdown(result: dict) -> str:
    """The Pearson table: one row per method, one column per query, and the mean."""
    queries = result["queries"]
    lines = ["| method | " + " | ".join(f"q{i + 1}" for i in range(len(queries))) + " | mean |",
             "| --- |" + " --- |" * (len(queries) + 1)]
    for name, values in result["pearson_with_pbrf"].items():
        lines.append(f"| {name} | " + " | ".join(f"{v:.3f}" for v in values) + f" | {sum(values) / len(values):.3f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
