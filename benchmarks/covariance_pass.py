"""The covariance pass alone on the peer workload, with its Gram products formed four ways, alternated.

- banded: what `fit` does (curvature/covariance.py: torch's addmm in bands of rows from the diagonal);
- full: one torch addmm per factor (the whole xᵀx);
- syrk1 / syrk2: scipy's BLAS ssyrk (half a product) with 1 or 2 OpenBLAS threads, beside torch's own pool.

Each variant runs `wherefrom fit`'s covariance pass (through the API, stopped before the eigendecompositions) in
a fresh process and prints its wall and CPU seconds. Results: benchmarks/results/profile-fit.md.

  python benchmarks/covariance_pass.py [--model bench-work/smollm2-hf] [--corpus bench-work/corpus.jsonl]
      [--variants banded full syrk1 syrk2] [--rounds 2] [--threads 2]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

VARIANTS = ("banded", "full", "syrk1", "syrk2")


class _Stop(Exception):
    """Raised where the fit would start its eigendecompositions."""


def one_pass(variant: str, model: str, corpus: str) -> None:
    """Run the covariance pass with ``variant``'s products; print its seconds."""
    import torch
    from scipy.linalg import blas

    import wherefrom.curvature.covariance as covariance
    import wherefrom.curvature.fitting as fitting
    from wherefrom.api import fit
    from wherefrom.engine.threads import scipy_threads
    from wherefrom.options import FitOptions

    def syrk(total: torch.Tensor, x: torch.Tensor, threads: int) -> None:
        with scipy_threads(threads):  # row-major [n, d] seen column-major is xᵀ; the upper triangle is filled
            blas.ssyrk(1.0, x.contiguous().numpy().T, beta=1.0, c=total.numpy().T, trans=0, lower=1, overwrite_c=1)

    products = {"banded": covariance.add_gram_upper, "full": lambda total, x: total.addmm_(x.T, x),
                "syrk1": lambda total, x: syrk(total, x, 1), "syrk2": lambda total, x: syrk(total, x, 2)}
    covariance.add_gram_upper = products[variant]
    real_run_pass = fitting.run_pass

    def timed_run_pass(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        wall, cpu = time.perf_counter(), time.process_time()
        result = real_run_pass(*args, **kwargs)
        print(f"{variant}: covariance pass {time.perf_counter() - wall:.1f} s wall, "
              f"{time.process_time() - cpu:.1f} CPU s", flush=True)
        return result

    def stop(*_args, **_kwargs) -> None:  # noqa: ANN002, ANN003
        raise _Stop

    fitting.run_pass, fitting.eigendecompose_all = timed_run_pass, stop
    out = Path(tempfile.mkdtemp(prefix="covariance-pass-"))
    try:
        fit(model, corpus, out, FitOptions(modules="mlp", strategy="kfac", fisher="empirical", max_length=64,
                                           batch_size=8), quiet=True)
    except _Stop:
        pass
    finally:
        shutil.rmtree(out, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="bench-work/smollm2-hf")
    parser.add_argument("--corpus", default="bench-work/corpus.jsonl")
    parser.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS))
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--one", choices=VARIANTS, help=argparse.SUPPRESS)  # the child process's variant
    args = parser.parse_args()
    if args.one:
        one_pass(args.one, args.model, args.corpus)
        return
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads)}
    for _ in range(args.rounds):
        for variant in args.variants:
            subprocess.run([sys.executable, __file__, "--one", variant, "--model", args.model, "--corpus",
                            args.corpus], env=env, check=True)


if __name__ == "__main__":
    main()
