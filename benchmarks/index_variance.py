"""Where full EK-FAC's scores come from: the share of their variance over training sequences carried by each layer
and by each band of Λ/(Λ+λ), the criterion by which the gradient index keeps entries.

    python benchmarks/index_variance.py --run RUN --queries Q.jsonl --corpus C.jsonl [--sequences 48] [--queries-used 6]

For each query the score of sequence z is a sum over layers and eigenbasis entries, I = Σ q̃ g̃ / (Λ + λ)
(Grosse et al. eq. 21). Splitting it into parts I_b (entries of band b), the share of Var_z(I) carried by part b is
Cov_z(I_b, I) / Var_z(I) (the shares add up to 1); reported as the mean over queries, per band for the whole model
and per layer. Also: how many entries each band holds, and the queries' mean energy per entry relative to Λ (the
training gradients' energy with sampled labels) per band. Writes --out (JSON) and prints a summary. A benchmark,
not a test: it asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from index_accuracy import Rotation  # noqa: E402
from index_compressions import LayerBasis, importance  # noqa: E402

from wherefrom.curvature.opening import open_run  # noqa: E402
from wherefrom.data.batching import Batch  # noqa: E402
from wherefrom.data.queries import read_queries  # noqa: E402
from wherefrom.engine.execution import start_execution  # noqa: E402
from wherefrom.engine.passes import Accumulator, Checkpoints, PassPlan, run_pass  # noqa: E402
from wherefrom.engine.stream import Labels, LayerBatch  # noqa: E402
from wherefrom.options import ScoreOptions  # noqa: E402
from wherefrom.scoring.generation import complete_queries  # noqa: E402
from wherefrom.scoring.query_gradients import query_gradients  # noqa: E402

EDGES = (0.0, 0.001, 0.01, 0.05, 0.1, 0.2, 0.5, 0.8, 1.01)  # bands of Λ/(Λ+λ)


class BandScores(Accumulator):
    """Each sequence's score on each query, split by layer and band: parts [layers, bands, Q, N]."""

    def __init__(self, rotations: dict[str, Rotation], preconditioned: dict[str, torch.Tensor],
                 bands: dict[str, torch.Tensor], n_sequences: int) -> None:
        self.rotations, self.preconditioned, self.bands = rotations, preconditioned, bands
        self.names = list(preconditioned)
        n_queries = next(iter(preconditioned.values())).shape[0]
        self.parts = torch.zeros(len(self.names), len(EDGES) - 1, n_queries, n_sequences, dtype=torch.float64)
        self.rows: torch.Tensor | None = None

    def begin(self, batch: Batch) -> None:
        self.rows = batch.rows.cpu()

    def layer(self, name: str, layer: LayerBatch) -> None:
        ds, a = self.rotations[name].rows(layer.output_grads.cpu(), layer.inputs.cpu())
        products = self.preconditioned[name][:, None, :] * torch.einsum("bto,bti->boi", ds, a).flatten(1)[None]
        for band in range(len(EDGES) - 1):
            mask = self.bands[name] == band
            self.parts[self.names.index(name), band][:, self.rows] = products[:, :, mask].sum(2).double()

    def state(self) -> dict[str, torch.Tensor]:
        return {}

    def merge(self, state: dict[str, torch.Tensor]) -> None:
        """Single process only: nothing to merge."""

    def totals(self) -> dict[str, torch.Tensor]:
        return {}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path, required=True)
    parser.add_argument("--queries", type=Path, required=True)
    parser.add_argument("--corpus", type=Path, help="Default: the run's corpus.")
    parser.add_argument("--sequences", type=int, default=48, help="The corpus's first n sequences.")
    parser.add_argument("--queries-used", type=int, default=6, help="The first n queries (each holds a full gradient).")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/index-variance.json"))
    args = parser.parse_args()
    opened = open_run(args.run)
    fitted, loaded, layers = opened.fitted, opened.loaded, opened.layers
    sequences = opened.sequences(args.corpus, fitted["max_length"], fitted["pack"])[:args.sequences]
    execution = start_execution(loaded.model)
    options = ScoreOptions(max_length=128, batch_size=fitted["batch_size"])
    queries = complete_queries(loaded.model, loaded.tokenizer, read_queries(args.queries, loaded.tokenizer, 128),
                               options, True)[:args.queries_used]
    gradients = query_gradients(loaded.model, layers, queries, options.batch_size, True, execution)
    edges = torch.tensor(EDGES)
    rotations, preconditioned, bands, energy = {}, {}, {}, {}
    for layer in layers:
        curvature = opened.factors.curvature.layers[layer.name]
        rotations[layer.name] = Rotation(curvature.Q_S, curvature.Q_A)
        basis = LayerBasis(curvature.eigenvalues.float(), curvature.damping(None))
        bands[layer.name] = (torch.bucketize(importance(basis), edges) - 1).to(torch.uint8)
        rotated = rotations[layer.name](*gradients.factors[layer.name]).flatten(1)
        preconditioned[layer.name] = rotated / (basis.Lambda.flatten() + basis.damping)
        Lambda = basis.Lambda.flatten()
        energy[layer.name] = [float((rotated ** 2).mean(0)[bands[layer.name] == b].sum()
                                    / Lambda[bands[layer.name] == b].sum().clamp_min(1e-30))
                              for b in range(len(EDGES) - 1)]
    scores = BandScores(rotations, preconditioned, bands, len(sequences))
    plan = PassPlan([s.input_ids for s in sequences], [1] * len(sequences), fitted["batch_size"], 10**9)
    run_pass(loaded.model, layers, plan, Labels("data"), "index-variance", "splitting scores", lambda: scores,
             Checkpoints(None, "index-variance"), execution, True)
    parts = scores.parts
    total = parts.sum((0, 1))  # [Q, N]
    centred = total - total.mean(1, keepdim=True)
    share = (((parts - parts.mean(3, keepdim=True)) * centred).sum(3) / (centred ** 2).sum(1)).mean(2)  # [layers, bands]
    names = scores.names
    counts = torch.stack([torch.bincount(bands[n].long(), minlength=len(EDGES) - 1) for n in names])
    summary = {"run": str(args.run), "n_sequences": len(sequences), "n_queries": len(queries), "band_edges": EDGES,
               "entries_per_band": counts.sum(0).tolist(), "variance_share_per_band": share.sum(0).tolist(),
               "query_energy_over_Lambda_per_band": [sum(energy[n][b] for n in names) / len(names)
                                                     for b in range(len(EDGES) - 1)],
               "layers": [{"name": n, "variance_share": float(share[i].sum()), "per_band": share[i].tolist(),
                           "entries_per_band": counts[i].tolist()} for i, n in enumerate(names)]}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(summary, indent=1) + "\n")
    print("bands of Λ/(Λ+λ):", EDGES)
    print("entries per band:", summary["entries_per_band"])
    print("share of the scores' variance per band:", [round(x, 3) for x in summary["variance_share_per_band"]])
    top = sorted(summary["layers"], key=lambda r: -r["variance_share"])[:5]
    print("largest layers:", ", ".join(f"{r['name']} {r['variance_share']:.3f}" for r in top))


if __name__ == "__main__":
    main()
