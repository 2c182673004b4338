"""The gradient index on disk, and answering queries from it without a pass over the corpus.

INDEX/
- ``gradients.npy``: [N, D] float16, memory-mapped; row n is sequence n's projected gradient (all layers
  side by side) divided by its largest magnitude, so every row uses float16's range fully;
- ``scales.npy``: [N] float32, that largest magnitude per row;
- ``projections.safetensors``: per layer Q_S, Q_A, the kept entries and Λ on them (see projection.py);
- ``manifest.json``: the run, corpus and options it was built from, the layers and their column slices.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file

from wherefrom.curvature.store import FactorRun
from wherefrom.errors import WherefromError
from wherefrom.index.projection import LayerProjection
from wherefrom.scoring.query_gradients import QueryGradients

FORMAT = "wherefrom-index/1"
GRADIENTS, SCALES, PROJECTIONS, MANIFEST = "gradients.npy", "scales.npy", "projections.safetensors", "manifest.json"
PROJECTION_PARTS = ("Q_S", "Q_A", "entries", "eigenvalues")
_ROWS_PER_CHUNK = 8192  # rows converted from float16 at a time while scoring


@dataclass
class GradientIndex:
    """A built index: projections per layer and the memory-mapped compressed gradients of every sequence."""

    folder: Path
    manifest: dict[str, Any]
    projections: dict[str, LayerProjection]
    gradients: np.ndarray  # [N, D] float16, memory-mapped
    scales: np.ndarray  # [N] float32

    @classmethod
    def open(cls, folder: str | Path) -> GradientIndex:
        """Open an index folder written by `wherefrom index` (the gradients stay on disk, memory-mapped)."""
        folder = Path(folder)
        if not (folder / MANIFEST).is_file():
            raise WherefromError(f"{folder} is not a finished gradient index (no {MANIFEST}); build one with "
                                 "`wherefrom index --run RUN --out INDEX` (an interrupted build resumes).")
        manifest = json.loads((folder / MANIFEST).read_text())
        if manifest.get("format") != FORMAT:
            raise WherefromError(f"{folder} holds index format {manifest.get('format')!r}; this wherefrom reads "
                                 f"{FORMAT}. Build the index again with this version.")
        tensors = load_file(str(folder / PROJECTIONS))
        projections = {
            entry["name"]: LayerProjection(*(tensors[f"{entry['name']}/{part}"] for part in PROJECTION_PARTS),
                                           default_damping=entry["default_damping"])
            for entry in manifest["layers"]
        }
        gradients = np.load(folder / GRADIENTS, mmap_mode="r")
        return cls(folder, manifest, projections, gradients, np.load(folder / SCALES))

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
            ds, a = gradients.factors[name]
            part = projection.precondition(ds, a, damping)
            parts.append(part if layers is None or name in layers else torch.zeros_like(part))
        return torch.cat(parts, dim=1)

    def scores(self, gradients: QueryGradients, damping: float | None = None,
               layers: Sequence[str] | None = None) -> torch.Tensor:
        """Approximate influence of every indexed sequence on each query: [Q, N] float32."""
        queries = self.queries_in_index_space(gradients, damping, layers)
        return self._contract(queries, [(0, queries.shape[1])])[0]

    def per_layer_scores(self, gradients: QueryGradients, damping: float | None = None) -> torch.Tensor:
        """Each layer's share of :meth:`scores`: [n_layers, Q, N] float32."""
        queries = self.queries_in_index_space(gradients, damping)
        return self._contract(queries, [tuple(entry["columns"]) for entry in self.manifest["layers"]])

    def _contract(self, queries: torch.Tensor, column_ranges: list[tuple[int, int]]) -> torch.Tensor:
        """Σ over each column range of queries · rows, undoing the per-row scale: [n_ranges, Q, N]."""
        out = torch.empty(len(column_ranges), queries.shape[0], self.n_sequences)
        for lo in range(0, self.n_sequences, _ROWS_PER_CHUNK):
            rows = torch.from_numpy(np.asarray(self.gradients[lo:lo + _ROWS_PER_CHUNK], dtype=np.float32))
            scale = torch.from_numpy(self.scales[lo:lo + rows.shape[0]])
            for i, (first, last) in enumerate(column_ranges):
                out[i, :, lo:lo + rows.shape[0]] = (queries[:, first:last] @ rows[:, first:last].T) * scale
        return out


def check_index_matches(index: GradientIndex, run: FactorRun, corpus_fingerprint: str) -> None:
    """Refuse an index built from another fitted run or another corpus than the one being scored."""
    if index.manifest["run_job"] != run.manifest["job"]:
        raise WherefromError(f"the index {index.folder} was built from another fitted run ({index.manifest['run']}); "
                             "build it again with `wherefrom index --run RUN` for this run.")
    if index.manifest["corpus_fingerprint"] != corpus_fingerprint:
        raise WherefromError(f"the index {index.folder} holds another corpus than {index.manifest['corpus']} gives now "
                             "(other text, or other --max-length/--pack); rebuild the index for this corpus.")
