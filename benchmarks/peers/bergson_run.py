"""EK-FAC influence with Bergson's CLI on the benchmark workload, and reading its scores back.

Bergson's `ekfac` verb runs query gradients, factor fitting, the inverse-Hessian application and scoring in one
process; it times its own steps 1 and 2, and `fit_seconds` reads step 2 ("step2_fit_hessian") from its log.

Flags (checked against `bergson ekfac --help` of bergson 2.5.1):
- `--method kfac --hessian_cfg.ev_correction true`: K-FAC eigenbasis plus the eigenvalue correction (EK-FAC);
  without ev_correction the verb computes plain K-FAC;
- `--use_dataset_labels true`: empirical Fisher; `--loss_reduction sum`: token-summed loss;
- `--filter_modules '*self_attn*'`: Bergson tracks every nn.Linear of the base model (lm_head excluded), so
  filtering attention leaves the gate/up/down projections;
- `--query.aggregation none`: one score column per query;
- damping: `damped_inverse` (the default) scales each eigenvalue by 1 / (lambda + c * mean(lambda)) with the
  mean over the module's (corrected) eigenvalue grid and c = `damping_factor`, default 0.1 — the paper's
  0.1 x mean eigenvalue per layer; passed explicitly below;
- precision: the model in fp32 (`--index_cfg.precision`, default) or bf16 when asked; factors, eigenvalue correction and
  scoring stay in fp32 (the defaults of `--hessian_dtype` and `--score.precision`), eigendecompositions in fp64;
- batches: `--token_batch_size` tokens per batch when given (Bergson's default is 2048).
Sign: the pipeline scores with `higher_is_better=True` (a positive score marks a proponent, i.e. a training
sequence that lowers the query loss): wherefrom's convention, so the scores are used unflipped.

  python -m benchmarks.peers.bergson_run --model DIR --train corpus-ds --queries queries-ds --out RUN
(run with the interpreter that has Bergson installed: it is launched as `python -m bergson`)
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np

DAMPING_FACTOR = 0.1
PRECISIONS = {"float32": "fp32", "bfloat16": "bf16"}
FIT_STEP = re.compile(r"\[step2_fit_hessian\] took ([0-9.]+)s")


def command(python: str, model: Path, train: Path, queries: Path, run: Path, precision: str = "fp32",
            token_batch_size: int | None = None) -> list[str]:
    """The `bergson ekfac` command line for the workload (`precision`: the model's dtype, fp32 or bf16)."""
    batching = ["--token_batch_size", str(token_batch_size)] if token_batch_size else []
    return [
        python, "-m", "bergson", "ekfac", str(run),
        "--model", str(model),
        "--data.dataset", str(train),
        "--query.dataset", str(queries),
        "--method", "kfac",
        "--hessian_cfg.ev_correction", "true",
        "--use_dataset_labels", "true",
        "--filter_modules", "*self_attn*",
        "--loss_reduction", "sum",
        "--query.aggregation", "none",
        "--hessian_pipeline_cfg.inversion_cfg.damping_factor", str(DAMPING_FACTOR),
        "--index_cfg.precision", precision,
        *batching,
    ]  # fmt: skip


def fit_seconds(log_text: str) -> float:
    """Bergson's own timing of its factor-fitting step, read from its output."""
    match = FIT_STEP.search(log_text)
    if match is None:
        raise ValueError("no '[step2_fit_hessian] took ...s' line in Bergson's output; did the run finish?")
    return float(match.group(1))


def load_scores(run: Path) -> np.ndarray:
    """Scores [n_queries, n_train] from RUN/scores (a structured memmap of score_i / written_i columns)."""
    score_dir = run / "scores"
    info = json.loads((score_dir / "info.json").read_text())
    if info.get("attribute_tokens"):
        raise ValueError(f"{score_dir} holds per-token scores; expected one score per training sequence")
    rows = np.memmap(score_dir / "scores.bin", dtype=np.dtype(info["dtype"]), mode="r", shape=(info["num_rows"],))
    columns = range(info["num_scores"])
    if not all(rows[f"written_{i}"].all() for i in columns):
        raise ValueError(f"{score_dir} has unwritten score cells; the run did not finish")
    return np.stack([np.asarray(rows[f"score_{i}"], dtype=np.float32) for i in columns])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--train", type=Path, required=True, help="datasets folder with input_ids and labels")
    parser.add_argument("--queries", type=Path, required=True, help="datasets folder, prompt labels -100")
    parser.add_argument("--out", type=Path, required=True, help="Bergson run folder (must not exist)")
    args = parser.parse_args()
    completed = subprocess.run(
        command(sys.executable, args.model, args.train, args.queries, args.out),
        capture_output=True,
        text=True,
        check=True,
    )
    np.save(args.out / "scores.npy", load_scores(args.out))
    print(f"fit {fit_seconds(completed.stdout + completed.stderr):.1f}s; scores -> {args.out / 'scores.npy'}")


if __name__ == "__main__":
    main()
