"""`wherefrom index`: one pass over the corpus that stores every sequence's projected gradient.

The pass is the engine's usual sharded, resumable, distributable stream; its consumer writes rows straight into
a memory-mapped file, so a finished shard is on disk and nothing is held in memory.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

from wherefrom.curvature.opening import open_run
from wherefrom.curvature.store import FactorRun
from wherefrom.data.batching import Batch
from wherefrom.data.corpus import corpus_fingerprint
from wherefrom.engine.distributed import World
from wherefrom.engine.execution import Execution, start_execution
from wherefrom.engine.passes import Accumulator, Checkpoints, PassPlan, run_pass
from wherefrom.engine.stream import Labels, LayerBatch
from wherefrom.errors import WherefromError
from wherefrom.fileio import atomic_write, atomic_write_text
from wherefrom.index.budget import RowLayout
from wherefrom.index.projection import LayerProjection, choose_projections
from wherefrom.index.store import FORMAT, GRADIENTS, MANIFEST, PROJECTION_PARTS, PROJECTIONS, SCALES, GradientIndex
from wherefrom.jobs import job_fingerprint
from wherefrom.models.loading import LoadedModel
from wherefrom.options import ExecutionOptions, IndexOptions
from wherefrom.version import __version__

SHARDS = ".shards"


class IndexWriter(Accumulator):
    """Consumes the stream and writes each sequence's scaled float16 row into the memory-mapped arrays."""

    def __init__(self, projections: dict[str, LayerProjection], gradients: np.ndarray, scales: np.ndarray,
                 device: torch.device) -> None:
        self.projections = {name: projection.to(device) for name, projection in projections.items()}
        self.gradients, self.scales = gradients, scales
        self._rows: dict[str, torch.Tensor] = {}
        self._batch: Batch | None = None

    def begin(self, batch: Batch) -> None:
        self._batch, self._rows = batch, {}

    def layer(self, name: str, layer: LayerBatch) -> None:
        """Project one layer's per-sequence gradients (in float32)."""
        self._rows[name] = self.projections[name].project(layer.output_grads.float(), layer.inputs.float())

    def end(self, loss: torch.Tensor) -> None:
        """Scale the batch's rows (all layers, in the projections' order) and store them in the index's float type."""
        rows = torch.cat([self._rows[name] for name in self.projections], dim=1)
        scale = rows.abs().amax(1).clamp_min(torch.finfo(torch.float32).tiny)
        index = self._batch.rows.numpy()
        self.gradients[index] = (rows / scale[:, None]).cpu().numpy().astype(self.gradients.dtype)
        self.scales[index] = scale.cpu().numpy()
        self._batch, self._rows = None, {}

    def state(self) -> dict[str, torch.Tensor]:
        """Flush the rows to disk; the checkpoint then only records which shards are finished."""
        self.gradients.flush()
        self.scales.flush()
        return {}

    def merge(self, state: dict[str, torch.Tensor]) -> None:
        """Nothing to add: the rows of finished shards are already in the memory-mapped files."""

    def totals(self) -> dict[str, torch.Tensor]:
        return {}


def build_index(run: str | Path, out: str | Path, corpus: str | Path | None = None,
                options: IndexOptions | None = None, model: str | Path | LoadedModel | None = None,
                quiet: bool = False, restart: bool = False,
                execution_options: ExecutionOptions | None = None) -> GradientIndex:
    """Store the projected gradient of every sequence of ``corpus`` (default: the fitted corpus) in ``out``."""
    execution_options = execution_options or ExecutionOptions()
    out, opened = Path(out), open_run(run, model, execution_options)
    factors, layers = opened.factors, opened.layers
    options = options or IndexOptions(**opened.data)
    corpus_path = opened.corpus_path(corpus).resolve()
    sequences = opened.sequences(corpus_path, options.max_length, options.pack)
    corpus_id = corpus_fingerprint(sequences)
    job = job_fingerprint(options={k: v for k, v in asdict(options).items() if k != "batch_size"},
                          run=factors.manifest["job"], corpus=corpus_id)
    if (out / MANIFEST).is_file():
        if json.loads((out / MANIFEST).read_text()).get("job") == job and not restart:
            return GradientIndex.open(out)
        if not restart:
            raise WherefromError(f"{out} already holds an index built from another run, corpus or options; "
                                 "choose another --out, or add --restart to replace it.")
    layout, projections = choose_projections({layer.name: factors.curvature.layers[layer.name] for layer in layers},
                                             options.budget)
    execution = start_execution(opened.loaded.model, execution_options)
    world = execution.world
    checkpoints = Checkpoints(out / SHARDS, job)
    checkpoints.open(restart)
    gradients, scales = _open_arrays(out / SHARDS, len(sequences), layout, world)
    plan = PassPlan([s.input_ids for s in sequences], [1] * len(sequences), options.batch_size, options.shard_size)
    run_pass(opened.loaded.model, layers, plan, Labels("data"), "index", "indexing gradients",
             lambda: IndexWriter(projections, gradients, scales, execution.device), checkpoints, execution, quiet)
    world.barrier()  # every rank's rows are on disk before rank 0 moves the files into place
    if world.is_main:
        _finish(out, Path(run).resolve(), layout, projections, factors, corpus_path, corpus_id, len(sequences),
                options, job, execution)
        checkpoints.finish()
    world.barrier()
    return GradientIndex.open(out)


def _open_arrays(folder: Path, n_rows: int, layout: RowLayout, world: World) -> tuple[np.ndarray, np.ndarray]:
    """The memory-mapped arrays being filled: created by rank 0 unless a resumed build left them."""
    paths = folder / GRADIENTS, folder / SCALES
    if world.is_main and not all(p.is_file() for p in paths):
        np.lib.format.open_memmap(paths[0], mode="w+", dtype=layout.dtype, shape=(n_rows, layout.values)).flush()
        np.lib.format.open_memmap(paths[1], mode="w+", dtype=np.float32, shape=(n_rows,)).flush()
    world.barrier()
    return np.load(paths[0], mmap_mode="r+"), np.load(paths[1], mmap_mode="r+")


def _finish(out: Path, run_dir: Path, layout: RowLayout, projections: dict[str, LayerProjection], factors: FactorRun,
            corpus: Path, corpus_id: str, n_sequences: int, options: IndexOptions, job: str, execution: Execution) -> None:
    """Move the filled arrays into place, then write projections and the manifest (last: it marks completion)."""
    for name in (GRADIENTS, SCALES):
        os.replace(out / SHARDS / name, out / name)
    tensors = {f"{name}/{part}": getattr(p, part).contiguous()
               for name, p in projections.items() for part in PROJECTION_PARTS}
    atomic_write(out / PROJECTIONS, lambda path: save_file(tensors, str(path)))
    layers, column = [], 0
    for name, p in projections.items():
        layers.append({"name": name, "size": p.size, "columns": [column, column + p.size],
                       "default_damping": p.default_damping})
        column += p.size
    manifest = {
        "format": FORMAT, "library_version": __version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "job": job, "run": str(run_dir), "run_job": factors.manifest["job"],
        "model": factors.manifest["model"], "strategy": factors.strategy,
        "corpus": str(corpus), "corpus_fingerprint": corpus_id,
        "n_sequences": n_sequences, "columns": column, "dtype": layout.dtype,
        "bytes_per_sequence": layout.bytes_per_sequence,
        "options": asdict(options), "execution": execution.describe(), "layers": layers,
    }
    atomic_write_text(out / MANIFEST, json.dumps(manifest, indent=2) + "\n")
