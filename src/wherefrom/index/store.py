"""The gradient index on disk, and answering queries from it without a pass over the corpus.

INDEX/
- ``gradients.npy``: [N, D] float16 (float32 for a 'full' budget), memory-mapped; row n is sequence n's projected
  gradient (all layers side by side) divided by its largest magnitude, so every row uses float16's range fully;
- ``scales.npy``: [N] float32, that largest magnitude per row;
- ``self_influence.npy``: [N] float32, each sequence's full (uncompressed) gradient's ∇Lᵀ(G + λI)⁻¹∇L summed
  over layers at each layer's default damping: the training-side norm of normalised scores (optional: read when
  the manifest names it under ``"self_influence"``; indexes built before it existed lack it);
- ``projections.safetensors``: per layer Q_S, Q_A, the kept entries and Λ on them (see projection.py);
- ``manifest.json``: the run, corpus and options it was built from, the layers and their column slices, the row's
  float type and its bytes per sequence. Readers ignore keys they do not know, so later versions can add arrays
  (say a per-sequence ``norms.npy``) without a new format.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file

from wherefrom.curvature.store import FactorRun
from wherefrom.errors import WherefromError
from wherefrom.fileio import first_line
from wherefrom.folders import FOREIGN, describe, folder_kind, read_manifest
from wherefrom.index.projection import LayerProjection
from wherefrom.scoring.query_gradients import QueryGradients

FORMAT = "wherefrom-index/1"
GRADIENTS, SCALES, PROJECTIONS, MANIFEST = "gradients.npy", "scales.npy", "projections.safetensors", "manifest.json"
SELF_INFLUENCE = "self_influence.npy"
PROJECTION_PARTS = ("Q_S", "Q_A", "entries", "eigenvalues")
INDEX_FIELDS: dict[str, type | tuple[type, ...]] = {
    "format": str, "job": str, "run": str, "run_job": str, "corpus": str, "corpus_fingerprint": str,
    "n_sequences": int, "columns": int, "options": dict, "options.max_length": int,
    "options.pack": bool, "options.batch_size": int, "options.shard_size": int, "layers": list,
    "layers[].name": str, "layers[].columns": list,
    "layers[].default_damping": (int, float),
}
_REBUILD = "build it again with `wherefrom index ... --restart`."
_CHUNK_ELEMENTS = 1 << 26  # index entries contracted at a time (128 MB of float16)


@dataclass
class GradientIndex:
    """A built index: projections per layer and the memory-mapped compressed gradients of every sequence."""

    folder: Path
    manifest: dict[str, Any]
    projections: dict[str, LayerProjection]
    gradients: np.ndarray  # [N, D] float16 (or float32), memory-mapped
    scales: np.ndarray  # [N] float32
    self_influence: np.ndarray | None  # [N] float32 at the default damping; None in indexes built without it
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))  # where queries are contracted

    def to(self, device: torch.device | str) -> GradientIndex:
        """The same index answering on ``device`` (the execution's): its projections are moved there once, and
        :meth:`contract` moves the rows there a chunk at a time (the rows themselves stay on disk)."""
        device = torch.device(device)
        return replace(self, projections={name: p.to(device) for name, p in self.projections.items()}, device=device)

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
        if manifest.get("format") != FORMAT:
            raise WherefromError(f"{folder} holds index format {manifest.get('format')!r}; this wherefrom reads "
                                 f"{FORMAT}. Build the index again with this version.")
        try:
            tensors = load_file(str(folder / PROJECTIONS))
            projections = {
                entry["name"]: LayerProjection(*(tensors[f"{entry['name']}/{part}"] for part in PROJECTION_PARTS),
                                               default_damping=entry["default_damping"])
                for entry in manifest["layers"]
            }
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
        return cls(folder, manifest, projections, gradients, scales, self_influence)

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
        """Preconditioned query gradients on the kept directions, all layers side by side: [Q, D] float32.

        Layers outside ``layers`` (default: all) are zero, so their columns add nothing to a score.
        """
        unknown = set(layers or ()) - set(self.projections)
        if unknown:
            raise WherefromError(f"the index has no layer {sorted(unknown)[0]!r}; its layers: "
                                 f"{', '.join(self.layer_names)}.")
        parts = []
        for name, projection in self.projections.items():
            ds, a = (t.to(self.device) for t in gradients.factors[name])  # where the index is contracted
            part = projection.precondition(ds, a, damping)
            parts.append(part if layers is None or name in layers else torch.zeros_like(part))
        return torch.cat(parts, dim=1)

    @property
    def chunk_rows(self) -> int:
        """Rows contracted at a time (bounds the working memory of a query, whatever the index size)."""
        return max(1, _CHUNK_ELEMENTS // self.gradients.shape[1])

    def scores(self, gradients: QueryGradients, damping: float | None = None,
               layers: Sequence[str] | None = None) -> torch.Tensor:
        """Approximate influence of every indexed sequence on each query: [Q, N] float32."""
        return self.contract(self.queries_in_index_space(gradients, damping, layers))[0]

    def per_layer_scores(self, gradients: QueryGradients, damping: float | None = None) -> torch.Tensor:
        """Each layer's share of :meth:`scores`: [n_layers, Q, N] float32."""
        queries = self.queries_in_index_space(gradients, damping)
        return self.contract(queries, [tuple(entry["columns"]) for entry in self.manifest["layers"]])

    def contract(self, queries: torch.Tensor, column_ranges: list[tuple[int, int]] | None = None) -> torch.Tensor:
        """Σ over each column range (default: all columns) of queries · rows, undoing the scales: [n_ranges, Q, N]
        on the host, computed on the index's device (:meth:`to`), the rows read from disk a chunk at a time.

        Precision policy: each query is scaled to a largest magnitude of 1 first, so that with rows also scaled to 1
        no product or sum can overflow float16, and the scales are multiplied back in float32. On a GPU each chunk of
        rows is widened to float32 there and the products accumulate in float32; on the host they run in the rows'
        float type as stored (no copy of the index; the host's float16 matrix product accumulates in float32 and
        rounds each result to float16).
        """
        ranges = column_ranges or [(0, queries.shape[1])]
        out = torch.empty(len(ranges), queries.shape[0], self.n_sequences)
        queries = queries.to(self.device)
        query_scale = queries.abs().amax(1, keepdim=True).clamp_min(torch.finfo(torch.float32).tiny)
        stored = torch.from_numpy(self.gradients[:0]).dtype
        dtype = stored if self.device.type == "cpu" else torch.float32
        scaled = (queries / query_scale).to(dtype)
        for lo in range(0, self.n_sequences, self.chunk_rows):
            rows = torch.from_numpy(self.gradients[lo:lo + self.chunk_rows]).to(self.device, dtype)
            scale = torch.from_numpy(self.scales[lo:lo + rows.shape[0]]).to(self.device)
            for i, (first, last) in enumerate(ranges):
                products = (scaled[:, first:last] @ rows[:, first:last].T).float()
                out[i, :, lo:lo + rows.shape[0]] = (products * query_scale * scale).cpu()
        return out


def check_index_matches(index: GradientIndex, run: FactorRun, corpus_fingerprint: str) -> None:
    """Refuse an index built from another fitted run or another corpus than the one being scored."""
    if index.manifest["run_job"] != run.manifest["job"]:
        raise WherefromError(f"the index {index.folder} was built from another fitted run ({index.manifest['run']}); "
                             "build it again with `wherefrom index --run RUN` for this run.")
    if index.manifest["corpus_fingerprint"] != corpus_fingerprint:
        raise WherefromError(f"the index {index.folder} holds another corpus than {index.manifest['corpus']} gives now "
                             "(other text, or other --max-length/--pack); rebuild the index for this corpus.")
