"""`wherefrom index`: one pass over the corpus that stores every sequence's projected gradient.

The pass is the engine's usual sharded, resumable, distributable stream; its consumer writes rows straight into
a memory-mapped file, so a finished shard is on disk and nothing is held in memory. Each sequence's
self-influence (its full gradient's squared norm in the (G + λI)⁻¹ metric, at each layer's default damping) is
stored too, from the same rotation: it is the training-side norm of normalised scores (--normalize).
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

from wherefrom.curvature.fitting import FittedCurvature
from wherefrom.curvature.opening import open_run
from wherefrom.curvature.store import FactorRun
from wherefrom.data.corpus import corpus_fingerprint
from wherefrom.engine.distributed import World, current_world
from wherefrom.engine.passes import Checkpoints, PassPlan, run_pass
from wherefrom.engine.stream import Labels, StreamBatch
from wherefrom.errors import WherefromError
from wherefrom.fileio import atomic_write, atomic_write_text
from wherefrom.index.budget import RowLayout
from wherefrom.index.projection import LayerProjection, choose_projections
from wherefrom.index.store import (
    FORMAT,
    GRADIENTS,
    MANIFEST,
    PROJECTION_PARTS,
    PROJECTIONS,
    SCALES,
    SELF_INFLUENCE,
    GradientIndex,
)
from wherefrom.jobs import job_fingerprint
from wherefrom.models.loading import LoadedModel
from wherefrom.options import IndexOptions
from wherefrom.scoring.contract import damped_square_norm
from wherefrom.version import __version__

SHARDS = ".shards"


class IndexWriter:
    """Consumes the stream and writes each sequence's scaled float16 row, its scale and its self-influence into
    the memory-mapped arrays."""

    def __init__(self, projections: dict[str, LayerProjection], curvature: FittedCurvature,
                 arrays: tuple[np.ndarray, np.ndarray, np.ndarray]) -> None:
        self.projections, self.curvature = projections, curvature
        self.gradients, self.scales, self.self_influence = arrays

    def update(self, item: StreamBatch) -> None:
        """Project one batch's per-sequence gradients (in float32) and store them in the index's float type, with
        their self-influence."""
        parts, self_influence = [], torch.zeros(item.batch.rows.shape[0], dtype=torch.float64)
        for name, layer in item.layers.items():
            projection, curvature = self.projections[name], self.curvature.layers[name]
            rotated = projection.rotate(layer.output_grads.float(), layer.inputs.float())
            parts.append(rotated.flatten(1)[:, projection.entries])
            self_influence += damped_square_norm(rotated, curvature.eigenvalues, curvature.damping(None))
        rows = torch.cat(parts, dim=1)
        scale = rows.abs().amax(1).clamp_min(torch.finfo(torch.float32).tiny)
        index = item.batch.rows.numpy()
        self.gradients[index] = (rows / scale[:, None]).numpy().astype(self.gradients.dtype)
        self.scales[index] = scale.numpy()
        self.self_influence[index] = self_influence.float().numpy()

    def state(self) -> dict[str, torch.Tensor]:
        """Flush the rows to disk; the checkpoint then only records which shards are finished."""
        for array in (self.gradients, self.scales, self.self_influence):
            array.flush()
        return {}

    def merge(self, state: dict[str, torch.Tensor]) -> None:
        """Nothing to add: the rows of finished shards are already in the memory-mapped files."""

    def totals(self) -> dict[str, torch.Tensor]:
        return {}


def build_index(run: str | Path, out: str | Path, corpus: str | Path | None = None,
                options: IndexOptions | None = None, model: str | Path | LoadedModel | None = None,
                quiet: bool = False, restart: bool = False) -> GradientIndex:
    """Store the projected gradient of every sequence of ``corpus`` (default: the fitted corpus) in ``out``."""
    out, opened = Path(out), open_run(run, model)
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
    world = current_world()
    checkpoints = Checkpoints(out / SHARDS, job)
    checkpoints.open(restart)
    arrays = _open_arrays(out / SHARDS, len(sequences), layout, world)
    plan = PassPlan([s.input_ids for s in sequences], [1] * len(sequences), options.batch_size, options.shard_size)
    run_pass(opened.loaded.model, layers, plan, Labels("data"), "index", "indexing gradients",
             lambda: IndexWriter(projections, factors.curvature, arrays), checkpoints, world, quiet)
    world.barrier()  # every rank's rows are on disk before rank 0 moves the files into place
    if world.is_main:
        _finish(out, Path(run).resolve(), layout, projections, factors, corpus_path, corpus_id, len(sequences),
                options, job)
        checkpoints.finish()
    world.barrier()
    return GradientIndex.open(out)


def _open_arrays(folder: Path, n_rows: int, layout: RowLayout, world: World
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The memory-mapped arrays being filled (gradients, scales, self-influence): created by rank 0 unless a
    resumed build left them."""
    shapes = {GRADIENTS: (layout.dtype, (n_rows, layout.values)), SCALES: (np.float32, (n_rows,)),
              SELF_INFLUENCE: (np.float32, (n_rows,))}
    if world.is_main and not all((folder / name).is_file() for name in shapes):
        for name, (dtype, shape) in shapes.items():
            np.lib.format.open_memmap(folder / name, mode="w+", dtype=dtype, shape=shape).flush()
    world.barrier()
    gradients, scales, self_influence = (np.load(folder / name, mmap_mode="r+") for name in shapes)
    return gradients, scales, self_influence


def _finish(out: Path, run_dir: Path, layout: RowLayout, projections: dict[str, LayerProjection], factors: FactorRun,
            corpus: Path, corpus_id: str, n_sequences: int, options: IndexOptions, job: str) -> None:
    """Move the filled arrays into place, then write projections and the manifest (last: it marks completion)."""
    for name in (GRADIENTS, SCALES, SELF_INFLUENCE):
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
        "options": asdict(options), "layers": layers, "self_influence": SELF_INFLUENCE,
    }
    atomic_write_text(out / MANIFEST, json.dumps(manifest, indent=2) + "\n")
