"""`wherefrom index`: one pass over the corpus that stores every sequence's projected gradient.

The pass is the engine's usual sharded, resumable, distributable stream; its consumer writes rows straight into
a memory-mapped file, so a finished shard is on disk and nothing is held in memory. Each sequence's
self-influence (its full gradient's squared norm in the (G + λI)⁻¹ metric, at each layer's default damping) is
stored too, from the same rotation: it is the training-side norm of normalised scores (--normalize).
"""

from __future__ import annotations

import errno
import json
import os
from dataclasses import asdict, replace
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

from wherefrom.allocator import Workspace
from wherefrom.curvature.fitting import FittedCurvature
from wherefrom.curvature.opening import open_run
from wherefrom.curvature.store import FactorRun
from wherefrom.data.batching import Batch
from wherefrom.data.corpus import corpus_fingerprint
from wherefrom.engine.distributed import World, is_first_rank
from wherefrom.engine.execution import Execution, start_execution
from wherefrom.engine.passes import Accumulator, Checkpoints, PassPlan, run_pass
from wherefrom.engine.stream import Labels, LayerBatch
from wherefrom.errors import WherefromError
from wherefrom.fileio import atomic_write_text, save_tensors
from wherefrom.folders import claim_output, finished_job
from wherefrom.index.budget import BITS, RowLayout, check_budget
from wherefrom.index.projection import LayerProjection, choose_projections, factors_digest, layer_columns
from wherefrom.index.sketch import sign_bits
from wherefrom.index.store import (
    FORMAT,
    GRADIENTS,
    MANIFEST,
    PROJECTIONS,
    SCALES,
    SELF_INFLUENCE,
    GradientIndex,
)
from wherefrom.jobs import job_fingerprint
from wherefrom.models.loading import LoadedModel
from wherefrom.models.positions import cap_max_length
from wherefrom.options import ExecutionOptions, IndexOptions
from wherefrom.progress import phase, track
from wherefrom.scoring.contract import damped_square_norm
from wherefrom.version import __version__

SHARDS = ".shards"


class IndexWriter(Accumulator):
    """Consumes the stream, layer by layer, and writes each sequence's row (a sketch's sign bits, or float16 or
    float32 entries), its scale and its self-influence into the memory-mapped arrays."""

    def __init__(self, projections: dict[str, LayerProjection], curvature: FittedCurvature,
                 arrays: tuple[np.ndarray, np.ndarray, np.ndarray], device: torch.device) -> None:
        self.projections = {name: projection.to(device) for name, projection in projections.items()}
        self.eigenvalues = {name: curvature.layers[name].eigenvalues.to(device) for name in projections}
        self.damping = {name: curvature.layers[name].damping(None) for name in projections}
        self.gradients, self.scales, self.self_influence = arrays
        self.columns = layer_columns(projections)
        self.width = max(hi for _, hi in self.columns.values())
        self.device = device
        self.workspace = Workspace(device)
        self._rows: torch.Tensor | None = None
        self._self_influence: torch.Tensor | None = None
        self._batch: Batch | None = None

    def begin(self, batch: Batch) -> None:
        self._batch, self._self_influence = batch, None
        self._rows = self.workspace.get("rows", (batch.rows.numel(), self.width), torch.float32).zero_()

    def layer(self, name: str, layer: LayerBatch) -> None:
        """Rotate one layer's per-sequence gradients (in float32): add the layer's part into its columns of the rows
        (a sketch's layers all add into the whole row), and its full rotated gradient's damped square norm into the
        self-influence."""
        projection = self.projections[name]
        rotated = projection.rotate(layer.output_grads.float(), layer.inputs.float(), self.workspace)
        lo, hi = self.columns[name]
        projection.add_to_rows(rotated, self._rows[:, lo:hi], self.workspace)
        norm = damped_square_norm(rotated, self.eigenvalues[name], self.damping[name], self.workspace)
        self._self_influence = norm if self._self_influence is None else self._self_influence + norm

    def end(self, loss: torch.Tensor) -> None:
        """Store the batch's rows in the index's type, with their scales and self-influence: a sketch's signs
        packed in bits with √(π/2)·RMS as the scale, float rows divided by their largest magnitude (float16's range
        used fully)."""
        rows = self._rows
        if self.gradients.dtype == np.uint8:
            stored, scale = sign_bits(rows)
        else:
            scale = rows.abs().amax(1).clamp_min(torch.finfo(torch.float32).tiny)
            stored = rows / scale[:, None]
        index = self._batch.rows.numpy()
        self.gradients[index] = stored.cpu().numpy().astype(self.gradients.dtype)
        self.scales[index] = scale.cpu().numpy()
        self.self_influence[index] = self._self_influence.float().cpu().numpy()
        self._batch, self._rows, self._self_influence = None, None, None

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
                quiet: bool = False, restart: bool = False,
                execution_options: ExecutionOptions | None = None) -> GradientIndex:
    """Store the projected gradient of every sequence of ``corpus`` (default: the fitted corpus) in ``out``
    (locked while it is written)."""
    out = Path(out)
    model_path = model.source if isinstance(model, LoadedModel) else model
    with claim_output(out, "index", [run, corpus, model_path], lock=is_first_rank()):
        return _build(Path(run), out, corpus, options, model, quiet, restart, execution_options or ExecutionOptions())


def _build(run: Path, out: Path, corpus: str | Path | None, options: IndexOptions | None,
           model: str | Path | LoadedModel | None, quiet: bool, restart: bool,
           execution_options: ExecutionOptions) -> GradientIndex:
    if options is not None:
        check_budget(options.budget, options.compression)
    with phase("loading the model and the run", quiet):
        opened = open_run(run, model, execution_options)
    factors, layers = opened.factors, opened.layers
    options = options or IndexOptions(**opened.data)
    options = replace(options, max_length=cap_max_length(opened.loaded.model, options.max_length, quiet))
    corpus_path = opened.corpus_path(corpus).resolve()
    sequences = opened.sequences(corpus_path, options.max_length, options.pack)
    corpus_id = corpus_fingerprint(sequences)
    job = job_fingerprint(options={k: v for k, v in asdict(options).items() if k != "batch_size"},
                          run=factors.manifest["job"], corpus=corpus_id)
    finished = finished_job(out)
    if finished == job and not restart:
        Checkpoints(out / SHARDS, job).finish_stopped()
        return GradientIndex.open(out)
    if finished is not None and not restart:
        raise WherefromError(f"{out} already holds an index built from another run, corpus or options; "
                             "choose another --out, or add --restart to replace it.")
    curvatures = {layer.name: factors.curvature.layers[layer.name]
                  for layer in track(layers, len(layers), "reading the factors", quiet)}
    with phase(f"choosing the projections ({options.compression}, {options.budget})", quiet):
        layout, projections = choose_projections(curvatures, options.budget, options.compression)
    execution = start_execution(opened.loaded.model, execution_options)
    world = execution.world
    checkpoints = Checkpoints(out / SHARDS, job)
    checkpoints.open(restart, world)
    if world.is_main:
        _take_back_moved_arrays(out, checkpoints)
    with phase(f"allocating the index ({len(sequences) * layout.bytes_per_sequence / 1e6:,.1f} MB)",
               quiet or not world.is_main):
        arrays = _open_arrays(out / SHARDS, len(sequences), layout, world)
    plan = PassPlan([s.input_ids for s in sequences], [1] * len(sequences), options.batch_size, options.shard_size)
    run_pass(opened.loaded.model, layers, plan, Labels("data"), "index", "indexing gradients",
             lambda: IndexWriter(projections, factors.curvature, arrays, execution.device), checkpoints, execution,
             quiet)
    world.barrier()  # every rank's rows are on disk before rank 0 moves the files into place
    if world.is_main:
        with phase("writing the index", quiet):
            _finish(out, run.resolve(), layout, projections, factors_digest(curvatures), factors, corpus_path,
                    corpus_id, len(sequences), options, job, execution)
        checkpoints.finish()
    world.barrier()
    return GradientIndex.open(out)


def _take_back_moved_arrays(out: Path, checkpoints: Checkpoints) -> None:
    """Undo the moves of a finish that was stopped (killed, or a full disk) after it moved some filled arrays into
    ``out`` but before it wrote the manifest: they go back among the shards, so the resumed build finishes them
    again rather than starting blank arrays that its finished shards would never fill. Where an array is in neither
    place (deleted by hand), the finished shards are discarded: their rows are gone."""
    shards = out / SHARDS
    if not checkpoints.finished():
        return
    for name in (GRADIENTS, SCALES, SELF_INFLUENCE):
        if not (shards / name).is_file() and (out / name).is_file():
            os.replace(out / name, shards / name)
    if not all((shards / name).is_file() for name in (GRADIENTS, SCALES, SELF_INFLUENCE)):
        checkpoints.discard_finished()


def _open_arrays(folder: Path, n_rows: int, layout: RowLayout, world: World
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The memory-mapped arrays being filled (gradients, scales, self-influence): created by rank 0 unless a
    resumed build left them."""
    shapes = {GRADIENTS: (layout.storage_dtype, (n_rows, layout.stored_columns)), SCALES: (np.float32, (n_rows,)),
              SELF_INFLUENCE: (np.float32, (n_rows,))}
    if world.is_main and not all((folder / name).is_file() for name in shapes):
        for name, (dtype, shape) in shapes.items():
            _preallocated_array(folder / name, dtype, shape)
    world.barrier()
    gradients, scales, self_influence = (np.load(folder / name, mmap_mode="r+") for name in shapes)
    return gradients, scales, self_influence


def _preallocated_array(path: Path, dtype: np.dtype | type, shape: tuple[int, ...]) -> None:
    """A zero-filled .npy file whose disk blocks are reserved now: a disk too small for it fails here with ENOSPC
    (an OSError) rather than later, inside a write through the memory map, by SIGBUS."""
    np.lib.format.open_memmap(path, mode="w+", dtype=dtype, shape=shape).flush()
    with path.open("r+b") as f:
        try:
            os.posix_fallocate(f.fileno(), 0, path.stat().st_size)
        except OSError as exc:
            if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL):  # a file system without fallocate: go on without
                path.unlink()
                raise


def _finish(out: Path, run_dir: Path, layout: RowLayout, projections: dict[str, LayerProjection], digest: str,
            factors: FactorRun, corpus: Path, corpus_id: str, n_sequences: int, options: IndexOptions, job: str,
            execution: Execution) -> None:
    """Write what the index keeps of the projections (kept entries; the bases stay in the run, ``digest`` their
    fingerprint), move the filled arrays into place, then write the manifest (last: it marks completion).

    An earlier index's manifest goes first, so that no moment leaves it describing the new files. A finish stopped
    at any point is done again by the same command (see :func:`_take_back_moved_arrays`)."""
    (out / MANIFEST).unlink(missing_ok=True)
    tensors = {f"{name}/{part}": tensor.contiguous()
               for name, p in projections.items() for part, tensor in p.tensors().items()}
    save_tensors(out / PROJECTIONS, tensors)
    for name in (GRADIENTS, SCALES, SELF_INFLUENCE):
        os.replace(out / SHARDS / name, out / name)
    layers = [{"name": name, "size": p.size, "columns": list(layer_columns(projections)[name]),
               "default_damping": p.default_damping, **p.manifest_fields()} for name, p in projections.items()]
    manifest = {
        "format": FORMAT, "kind": "index", "library_version": __version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "job": job, "run": str(run_dir), "run_job": factors.manifest["job"], "run_factors": digest,
        "model": factors.manifest["model"], "strategy": factors.strategy,
        "corpus": str(corpus), "corpus_fingerprint": corpus_id,
        "n_sequences": n_sequences, "columns": layout.stored_columns, "values": layout.values, "dtype": layout.dtype,
        "compression": "sketch" if layout.dtype == BITS else "entries",
        "bytes_per_sequence": layout.bytes_per_sequence,
        "options": asdict(options), "execution": execution.describe(), "layers": layers,
        "self_influence": SELF_INFLUENCE,
    }
    atomic_write_text(out / MANIFEST, json.dumps(manifest, indent=2) + "\n")
