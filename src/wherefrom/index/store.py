"""The gradient index on disk, and answering queries from it without a pass over the corpus.

INDEX/
- ``gradients.npy``, memory-mapped: row n is sequence n's compressed gradient. Compression 'sketch': the signs of
  the D buckets of its whitened gradient's CountSketch (all layers into the same buckets), packed 8 to a byte,
  [N, D/8] uint8 (sketch.py); 'entries': the kept entries of all layers side by side, divided by the row's largest
  magnitude, [N, D] float16 (float32 for a 'full' budget);
- ``scales.npy``: [N] float32, σ√(π/2) of the row's buckets (sketch) or its largest magnitude (entries);
- ``self_influence.npy``: [N] float32, each sequence's full (uncompressed) gradient's ∇Lᵀ(G + λI)⁻¹∇L summed
  over layers at each layer's default damping: the training-side norm of normalised scores (optional: read when
  the manifest names it under ``"self_influence"``; indexes built before it existed lack it);
- ``projections.safetensors``: what the run does not hold: per layer its kept entries (``entries``), nothing for a
  sketch (its per-layer hash seeds are in the manifest). Q_S, Q_A and Λ are read from the run's factors when the
  first query needs them, checked against ``run_factors``, the fingerprint the manifest recorded of them (formats
  /1 and /2 held a copy of them here);
- ``manifest.json``: the run (folder, job, ``run_factors``), corpus and options it was built from, the compression,
  the layers and their column slices, the row's type, its number of values and its bytes per sequence. Readers
  ignore keys they do not know, so later versions can add arrays (say a per-sequence ``norms.npy``) without a new
  format.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file

from wherefrom.curvature.store import FactorRun, load_run
from wherefrom.errors import WherefromError
from wherefrom.fileio import first_line
from wherefrom.folders import FOREIGN, describe, folder_kind, read_manifest
from wherefrom.index.bitplanes import QUERY_BITS, PlaneKernel, plane_kernel, plane_sums, query_planes
from wherefrom.index.projection import (
    KeptEntries,
    LayerProjection,
    SketchedEntries,
    factors_digest,
    from_run,
    layer_columns,
)
from wherefrom.index.sketch import unpack_signs
from wherefrom.scoring.query_gradients import QueryGradients

FORMAT = "wherefrom-index/3"
# /1: kept entries only, before the sketch; /1 and /2 hold copies of the run's Q_S, Q_A and Λ in projections.safetensors
READABLE_FORMATS = ("wherefrom-index/1", "wherefrom-index/2", FORMAT)
OWN_BASES = READABLE_FORMATS[:2]
GRADIENTS, SCALES, PROJECTIONS, MANIFEST = "gradients.npy", "scales.npy", "projections.safetensors", "manifest.json"
SELF_INFLUENCE = "self_influence.npy"
INDEX_FIELDS: dict[str, type | tuple[type, ...]] = {
    "format": str, "job": str, "run": str, "run_job": str, "corpus": str, "corpus_fingerprint": str,
    "n_sequences": int, "columns": int, "options": dict, "options.max_length": int,
    "options.pack": bool, "options.batch_size": int, "options.shard_size": int, "layers": list,
    "layers[].name": str, "layers[].columns": list,
    "layers[].default_damping": (int, float),
}
_REBUILD = "build it again with `wherefrom index ... --restart`."
_CHUNK_ELEMENTS = 1 << 26  # index values contracted at a time (128 MB of float16)
_SIGN_CHUNK_ELEMENTS = 1 << 24  # a sketch's buckets at a time: 16 MB unpacked, written and read while in cache
_PLANE_CHUNK_BYTES = 1 << 24  # a sketch's packed bits read at a time by bit planes (nothing is unpacked)
KERNEL_BLOCK = 64  # the host's int8 kernel reads a row's columns in whole blocks of this many (no tail)
PLANE_QUERY_ROWS = 8  # up to this many query rows a sketch's bit planes beat unpacking the bits (measured: docs/index.md)


@dataclass
class GradientIndex:
    """A built index: the memory-mapped compressed gradients of every sequence, and the projections per layer that
    queries go through (made from its run's factors when first needed)."""

    folder: Path
    manifest: dict[str, Any]
    layer_projections: dict[str, LayerProjection] | None  # None: not made from the run's factors yet
    gradients: np.ndarray  # [N, D] float16 (or float32), memory-mapped
    scales: np.ndarray  # [N] float32
    self_influence: np.ndarray | None  # [N] float32 at the default damping; None in indexes built without it
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))  # where queries are contracted
    stored: dict[str, torch.Tensor] = field(default_factory=dict)  # projections.safetensors: the kept entries
    run: FactorRun | None = None  # the run the projections are made from (default: the manifest's)

    def to(self, device: torch.device | str) -> GradientIndex:
        """The same index answering on ``device`` (the execution's): its projections live there, and
        :meth:`contract` moves the rows there a chunk at a time (the rows themselves stay on disk)."""
        device = torch.device(device)
        moved = None if self.layer_projections is None else {
            name: p.to(device) for name, p in self.layer_projections.items()}
        return replace(self, layer_projections=moved, device=device)

    def attach(self, run: FactorRun) -> None:
        """Make the projections from ``run`` now (the run given, which may have moved since the index was built),
        so that factors changed since the build are refused before any work."""
        self.run = run
        if self.manifest["format"] not in OWN_BASES:
            self.layer_projections = self._projections_from_run()

    @property
    def projections(self) -> dict[str, LayerProjection]:
        """Each layer's projection (made from the run's factors when first needed, unless :meth:`attach` did)."""
        if self.layer_projections is None:
            self.layer_projections = self._projections_from_run()
        return self.layer_projections

    def _projections_from_run(self) -> dict[str, LayerProjection]:
        """Q_S, Q_A and Λ read from the run's factors (checked against the fingerprint the index recorded of them),
        with the kept entries or a sketch's hash from the index."""
        run = self.run if self.run is not None else load_run(self.run_folder)
        curvatures = {name: run.curvature.layers[name] for name in self.layer_names}
        if factors_digest(curvatures) != self.manifest.get("run_factors"):
            raise WherefromError(f"the index {self.folder} was built from other factors than its run holds now "
                                 f"(fitted again since?); {_REBUILD}")
        return {entry["name"]: from_run(curvatures[entry["name"]], entry, self.manifest["compression"],
                                        _layer_part(self.stored, entry)).to(self.device)
                for entry in self.manifest["layers"]}

    @classmethod
    def open(cls, folder: str | Path) -> GradientIndex:
        """Open an index folder written by `wherefrom index` (the gradients stay on disk, memory-mapped)."""
        folder = Path(folder)
        if not (folder / MANIFEST).is_file():
            found = folder_kind(folder)
            if found not in (None, FOREIGN, "index"):
                raise WherefromError(f"{folder} is {describe(found)}, not a gradient index; give the folder that "
                                     "`wherefrom index --out` wrote.")
            raise WherefromError(f"{folder} is not a finished gradient index (no {MANIFEST}); build one with "
                                 "`wherefrom index --run RUN --out INDEX` (an interrupted build resumes).")
        manifest = read_manifest(folder, "index", INDEX_FIELDS, _REBUILD)
        if manifest.get("format") not in READABLE_FORMATS:
            raise WherefromError(f"{folder} holds index format {manifest.get('format')!r}; this wherefrom reads "
                                 f"{FORMAT}. Build the index again with this version.")
        try:
            tensors = load_file(str(folder / PROJECTIONS))
            projections = {entry["name"]: _layer_projection(entry, tensors, manifest.get("compression", "entries"))
                           for entry in manifest["layers"]} if manifest["format"] in OWN_BASES else None
            # copy-on-write: read-only on disk, a writable view for torch
            gradients, scales = np.load(folder / GRADIENTS, mmap_mode="c"), np.load(folder / SCALES)
            self_influence = np.load(folder / SELF_INFLUENCE) if "self_influence" in manifest else None
        except Exception as exc:  # numpy and safetensors raise several types for a damaged file
            raise WherefromError(f"{folder} is damaged ({first_line(exc)}); {_REBUILD}") from None
        expected = (manifest["n_sequences"], manifest["columns"])
        if gradients.shape != expected or scales.shape != expected[:1]:
            raise WherefromError(f"{folder} is damaged: {GRADIENTS} has shape {gradients.shape} and {SCALES} "
                                 f"{scales.shape}, the manifest says {expected}; {_REBUILD}")
        if self_influence is not None and self_influence.shape != expected[:1]:
            raise WherefromError(f"{folder} is damaged: {SELF_INFLUENCE} has shape "
                                 f"{self_influence.shape}, the manifest says {expected[:1]}; {_REBUILD}")
        return cls(folder, manifest, projections, gradients, scales, self_influence, stored=tensors)

    @property
    def run_folder(self) -> Path:
        """The fitted run the index was built from (what `score --index` and the explorer use unless told)."""
        folder = Path(self.manifest["run"])
        if not (folder / MANIFEST).is_file():
            raise WherefromError(f"the index {self.folder} was built from the run {folder}, which is not there any "
                                 "more; give --run RUN (the same fitted run, moved).")
        return folder

    @property
    def n_sequences(self) -> int:
        return int(self.gradients.shape[0])

    @property
    def layer_names(self) -> list[str]:
        return [entry["name"] for entry in self.manifest["layers"]]

    def queries_in_index_space(self, gradients: QueryGradients, damping: float | None,
                               layers: Sequence[str] | None = None) -> torch.Tensor:
        """Preconditioned query gradients in the index's space, each layer's part added into its columns (kept
        entries side by side; a sketch's layers over the whole row): [Q, values] float32.

        Layers outside ``layers`` (default: all) add nothing, so the scores are those of ``layers`` alone (for a
        sketch an unbiased estimate of them: the other layers' buckets in the rows add only noise).
        """
        unknown = set(layers or ()) - set(self.projections)
        if unknown:
            raise WherefromError(f"the index has no layer {sorted(unknown)[0]!r}; its layers: "
                                 f"{', '.join(self.layer_names)}.")
        columns = layer_columns(self.projections)
        queries = torch.zeros(len(gradients.logprobs), self.values, device=self.device)
        for name, projection in self.projections.items():
            if layers is None or name in layers:
                ds, a = (t.to(self.device) for t in gradients.factors[name])  # where the index is contracted
                lo, hi = columns[name]
                queries[:, lo:hi] += projection.precondition(ds, a, damping)
        return queries

    @property
    def values(self) -> int:
        """Numbers per row: sketch buckets (8 to a stored byte) or kept entries."""
        return int(self.manifest.get("values", self.gradients.shape[1]))

    @property
    def chunk_rows(self) -> int:
        """Rows contracted at a time (bounds the working memory of a query, whatever the index size)."""
        elements = _SIGN_CHUNK_ELEMENTS if self.manifest.get("compression") == "sketch" else _CHUNK_ELEMENTS
        return max(1, elements // self.values)

    def scores(self, gradients: QueryGradients, damping: float | None = None,
               layers: Sequence[str] | None = None) -> torch.Tensor:
        """Approximate influence of every indexed sequence on each query: [Q, N] float32."""
        return self.contract(self.queries_in_index_space(gradients, damping, layers))[0]

    def per_layer_scores(self, gradients: QueryGradients, damping: float | None = None) -> torch.Tensor:
        """Each layer's share of :meth:`scores`: [n_layers, Q, N] float32 (kept entries: each layer's columns; a
        sketch: the query's part of each layer alone, against the whole rows, in the same pass over them)."""
        columns = [tuple(entry["columns"]) for entry in self.manifest["layers"]]
        if self.manifest.get("compression") != "sketch":
            return self.contract(self.queries_in_index_space(gradients, damping), columns)
        queries = torch.stack([self.queries_in_index_space(gradients, damping, [name]) for name in self.layer_names])
        return self.contract(queries, columns)

    def contract(self, queries: torch.Tensor, column_ranges: list[tuple[int, int]] | None = None) -> torch.Tensor:
        """Σ over each column range (default: all columns) of queries · rows, undoing the scales: [n_ranges, Q, N]
        on the host, computed on the index's device (:meth:`to`), the rows read from disk a chunk at a time.
        ``queries`` is [Q, values], or [n_ranges, Q, values] to give each range its own queries.

        Precision policy: each query is scaled to a largest magnitude of 1 first, so that with rows also scaled to 1
        no product or sum can overflow float16, and the scales are multiplied back in float32 (see
        :func:`_row_products` for the products themselves). A sketch on the host with numba installed and at most
        ``PLANE_QUERY_ROWS`` query rows is contracted in exact integers from its packed bits instead (bitplanes.py):
        the query rounded to 12-bit integers, the sums exact, the scales multiplied back in float64.
        """
        ranges = column_ranges or [(0, queries.shape[-1])]
        queries = queries.to(self.device).expand(len(ranges), *queries.shape[-2:])
        out = torch.empty(len(ranges), queries.shape[1], self.n_sequences)
        query_scale = queries.abs().amax(2, keepdim=True).clamp_min(torch.finfo(torch.float32).tiny)
        scaled = queries / query_scale
        signs = self.manifest.get("compression") == "sketch"
        kernel = plane_kernel() if signs and self.device.type == "cpu" else None
        if kernel is not None and len(ranges) * queries.shape[1] <= PLANE_QUERY_ROWS and \
                all(r == (0, self.values) for r in ranges):
            rows = max(1, _PLANE_CHUNK_BYTES // self.gradients.shape[1])
            chunk = self._plane_chunk(kernel, scaled, query_scale, rows)
        else:
            rows = self.chunk_rows
            chunk = self._product_chunk(scaled, query_scale, ranges)
        starts = range(0, self.n_sequences, rows)
        if signs and self.device.type == "cpu":  # unpacking and the bit planes run on one core per call: spread
            with ThreadPoolExecutor(torch.get_num_threads()) as pool:  # the chunks over the cores
                done = list(pool.map(chunk, starts))
        else:
            done = map(chunk, starts)
        for lo, products in done:
            out[:, :, lo:lo + products.shape[-1]] = products
        return out

    def _product_chunk(self, scaled: torch.Tensor, query_scale: torch.Tensor, ranges: list[tuple[int, int]]
                       ) -> Callable[[int], tuple[int, torch.Tensor]]:
        """The products of the rows from ``lo`` on, by :func:`_row_products` ([n_ranges, Q, n] on the host)."""
        signs = self.manifest.get("compression") == "sketch"

        def chunk(lo: int) -> tuple[int, torch.Tensor]:
            rows = torch.from_numpy(self.gradients[lo:lo + self.chunk_rows]).to(self.device)
            rows = unpack_signs(rows) if signs else rows
            scale = torch.from_numpy(self.scales[lo:lo + rows.shape[0]]).to(self.device)
            products = []
            for i, (first, last) in enumerate(ranges):
                part = _row_products(scaled[i, :, first:last], rows[:, first:last])
                if signs:  # rows hold bits b ∈ {0, 1} for signs 2b − 1: Σ x·(2b − 1) = 2·Σ x·b − Σ x
                    part = 2 * part - scaled[i, :, first:last].sum(1, keepdim=True)
                products.append(part * query_scale[i] * scale)
            return lo, torch.stack(products).cpu()
        return chunk

    def _plane_chunk(self, kernel: PlaneKernel, scaled: torch.Tensor, query_scale: torch.Tensor, rows: int
                     ) -> Callable[[int], tuple[int, torch.Tensor]]:
        """A sketch's products of ``rows`` rows from ``lo`` on from their packed bits, by bit planes (bitplanes.py):
        scale · step · Σ q_int·(2b − 1) with the sum exact in int64 ([n_ranges, Q, n] float32)."""
        planes, integers = query_planes(scaled.flatten(0, 1).cpu())
        totals = integers.sum(1)  # Σ q_int: the signs 2b − 1 give 2·Σ q_int·b − Σ q_int
        steps = query_scale.flatten().double().cpu() / (2 ** (QUERY_BITS - 1) - 1)

        def chunk(lo: int) -> tuple[int, torch.Tensor]:
            sums = torch.from_numpy(plane_sums(kernel, self.gradients[lo:lo + rows], planes))
            scale = torch.from_numpy(self.scales[lo:lo + sums.shape[0]]).double()
            products = (2 * sums - totals).T.double() * steps[:, None] * scale
            return lo, products.float().reshape(*scaled.shape[:2], -1)
        return chunk


_INT8_KERNEL = hasattr(torch.ops.aten, "_weight_int8pack_mm")


def _row_products(queries: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """queries [Q, D] float32 (largest magnitude 1) · rows [n, D] as stored: [Q, n] float32.

    On the host the rows are read in their stored type, with no widened copy of the chunk: float16 (and float32)
    rows by a matrix product in that type (float16 accumulates in float32 and rounds each result to float16), int8
    rows (a sketch's unpacked bits) by torch's weight-only int8 kernel (the query in bfloat16, products accumulated
    in float32, each result rounded to bfloat16: 2⁻⁹ relative, far below a sketch's own error). On a GPU each
    chunk is widened to float32 there and the products accumulate in float32.
    """
    if rows.device.type == "cpu" and rows.dtype == torch.int8 and _INT8_KERNEL:
        pad = -rows.shape[1] % KERNEL_BLOCK
        if pad:  # the kernel reads whole blocks: a zero-padded copy
            rows, queries = torch.nn.functional.pad(rows, (0, pad)), torch.nn.functional.pad(queries, (0, pad))
        ones = torch.ones(rows.shape[0], dtype=torch.bfloat16)
        return torch.ops.aten._weight_int8pack_mm(queries.bfloat16(), rows.contiguous(), ones).float()
    if rows.device.type == "cpu" and rows.dtype != torch.int8:
        return (queries.to(rows.dtype) @ rows.T).float()
    return queries.float() @ rows.float().T


def _layer_part(tensors: dict[str, torch.Tensor], entry: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The tensors projections.safetensors holds of the manifest's layer ``entry``, by their names in the layer."""
    prefix = f"{entry['name']}/"
    return {key[len(prefix):]: tensor for key, tensor in tensors.items() if key.startswith(prefix)}


def _layer_projection(entry: dict[str, Any], tensors: dict[str, torch.Tensor], compression: str) -> LayerProjection:
    """One layer's projection as the manifest's ``entry`` and projections.safetensors of an index of format /1 or /2
    (which held the run's bases) describe it."""
    name = entry["name"]
    basis = (tensors[f"{name}/Q_S"], tensors[f"{name}/Q_A"], tensors[f"{name}/eigenvalues"], entry["default_damping"])
    if compression == "sketch":
        return SketchedEntries(*basis, buckets=entry["size"], seed=entry["seed"])
    return KeptEntries(*basis, entries=tensors[f"{name}/entries"])


def check_index_matches(index: GradientIndex, run: FactorRun, corpus_fingerprint: str) -> None:
    """Refuse an index built from another fitted run or another corpus than the one being scored, or from factors
    the run no longer holds; the index then has its projections from ``run`` (:meth:`GradientIndex.attach`)."""
    if index.manifest["run_job"] != run.manifest["job"]:
        raise WherefromError(f"the index {index.folder} was built from another fitted run ({index.manifest['run']}); "
                             "build it again with `wherefrom index --run RUN` for this run.")
    if index.manifest["corpus_fingerprint"] != corpus_fingerprint:
        raise WherefromError(f"the index {index.folder} holds another corpus than {index.manifest['corpus']} gives now "
                             "(other text, or other --max-length/--pack); rebuild the index for this corpus.")
    index.attach(run)
