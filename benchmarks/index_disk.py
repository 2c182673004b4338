"""The disk an index takes beside its run: every file of both folders, measured after a real build.

    python benchmarks/index_disk.py --run RUN --out INDEX [--budget 64KB] [--compression sketch] [--corpus C]

Builds the index of ``--run`` (its own corpus, or ``--corpus``: the fixed part does not depend on the number of
sequences, so a few of them measure it) with `wherefrom index`'s API, then lists the size of every file in
the run and in the index, and the index's fixed part (everything but the per-sequence arrays gradients.npy,
scales.npy and self_influence.npy) as a share of the run folder, and the size projections.safetensors had
in format /2 (a copy of the run's bases). Writes benchmarks/results/index-disk-NAME.json
(NAME: ``--name``, default the run folder's parent's name). A benchmark, not a test: it asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

from wherefrom.costs.memory import safetensors_bytes
from wherefrom.index import GradientIndex, build_index
from wherefrom.options import IndexOptions

RESULTS = Path(__file__).parent / "results"
PER_SEQUENCE = ("gradients.npy", "scales.npy", "self_influence.npy")


def file_sizes(folder: Path) -> dict[str, int]:
    """Bytes of every file under ``folder`` (relative names), hidden ones (locks, shards) left out."""
    return {str(path.relative_to(folder)): path.stat().st_size for path in sorted(folder.rglob("*"))
            if path.is_file() and not any(part.startswith(".") for part in path.relative_to(folder).parts)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--budget", default="64KB")
    parser.add_argument("--compression", default="sketch", choices=["sketch", "entries"])
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--corpus", type=Path, help="another corpus than the run's (default: the run's)")
    parser.add_argument("--name", help="results file name (default: the run folder's parent's name)")
    args = parser.parse_args()
    clock = time.perf_counter()
    index = build_index(args.run, args.out, args.corpus, quiet=True, options=_options(args))
    seconds = time.perf_counter() - clock
    run, built = file_sizes(args.run), file_sizes(args.out)
    fixed = sum(size for name, size in built.items() if name not in PER_SEQUENCE)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    result = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "commit": commit,
        "run": str(args.run), "index": str(args.out), "budget": args.budget, "compression": args.compression,
        "sequences": index.n_sequences, "layers": len(index.layer_names), "format": index.manifest["format"],
        "run_files": run, "index_files": built, "run_bytes": sum(run.values()), "index_bytes": sum(built.values()),
        "index_fixed_bytes": fixed, "index_fixed_over_run": fixed / sum(run.values()),
        "format_2_projections_bytes": format_2_projections(index),
        "build_s": seconds, "threads": torch.get_num_threads(), "load_average_1min": os.getloadavg()[0],
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    name = args.name or args.run.resolve().parent.name
    (RESULTS / f"index-disk-{name}.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


def format_2_projections(index: GradientIndex) -> int:
    """The size projections.safetensors had in format /2, which copied every layer's Q_S, Q_A and Λ (computed
    from the same tensors, now read from the run)."""
    return safetensors_bytes({f"{name}/{part}": (tuple(tensor.shape), tensor.dtype)
                              for name, p in index.projections.items()
                              for part, tensor in (("Q_S", p.Q_S), ("Q_A", p.Q_A), ("eigenvalues", p.eigenvalues),
                                                   *p.tensors().items())})


def _options(args: argparse.Namespace) -> IndexOptions:
    """The run's own data options (its max length, packing), with this benchmark's budget and batch size."""
    fitted = json.loads((args.run / "manifest.json").read_text())["options"]
    return IndexOptions(max_length=fitted["max_length"], pack=fitted["pack"], batch_size=args.batch_size,
                        budget=args.budget, compression=args.compression)


if __name__ == "__main__":
    main()
