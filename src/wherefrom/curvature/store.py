"""Save and load fitted factors: ``factors.safetensors`` plus ``manifest.json`` (never pickle).

Per layer: ``{layer}/Q_A``, ``{layer}/Q_S``, ``{layer}/eigenvalues``; a block-diagonal basis (``--factor-blocks``)
is stored as its blocks ``{layer}/Q_A/0``, ``{layer}/Q_A/1``, … and the manifest's options record the block count.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open

from wherefrom.curvature.blocks import basis_from_tensors, basis_tensors
from wherefrom.curvature.fitting import FittedCurvature
from wherefrom.curvature.preconditioner import LayerCurvature
from wherefrom.errors import WherefromError
from wherefrom.fileio import atomic_write_text, first_line, save_tensors
from wherefrom.folders import FOREIGN, describe, folder_kind, read_manifest
from wherefrom.models.selection import TrackedLayer
from wherefrom.version import __version__

FORMAT = "wherefrom-factors/1"
_PARTS = ("Q_A", "Q_S", "eigenvalues")


@dataclass
class FactorRun:
    """A fitted run folder: the curvature and the manifest describing what it was fitted on."""

    curvature: FittedCurvature
    manifest: dict[str, Any]

    @property
    def strategy(self) -> str:
        return str(self.manifest["options"]["strategy"])

    @property
    def allow_pickle(self) -> bool:
        """Whether the run was fitted with --allow-pickle (its model is then loaded the same way)."""
        return bool(self.manifest["model"].get("allow_pickle", False))


def save_run(run_dir: Path, curvature: FittedCurvature, layers: list[TrackedLayer], model_source: str,
             model_fingerprint: str, corpus_fingerprint: str, options: dict[str, Any], job: str,
             seconds: float | None = None, execution: dict[str, Any] | None = None,
             allow_pickle: bool = False, coverage: dict[str, Any] | None = None) -> Path:
    """Write factors and manifest into ``run_dir`` (each file atomically; the manifest last); ``seconds``: how
    long the fit took (its last session, when it was resumed), which `check` takes as its default budget;
    ``execution``: the device, dtype and factor placement the run was fitted with; ``coverage``: what share of the
    model's parameters the tracked layers hold (`models/coverage.py`)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    tensors: dict[str, torch.Tensor] = {}
    stored: set[int] = set()
    for name, layer in curvature.layers.items():
        for part in _PARTS:
            value = getattr(layer, part)
            if value is None:
                continue
            parts = basis_tensors(value)
            for i, tensor in enumerate(parts):  # safetensors refuses two names for one storage (shared Q_A)
                pointer = tensor.untyped_storage().data_ptr()
                key = f"{name}/{part}" if len(parts) == 1 else f"{name}/{part}/{i}"
                tensors[key] = (tensor.clone() if pointer in stored else tensor).contiguous().cpu()
                stored.add(pointer)
    manifest = {
        "format": FORMAT,
        "kind": "run",
        "library_version": __version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "model": {"source": model_source, "fingerprint": model_fingerprint,
                  **({"allow_pickle": True} if allow_pickle else {})},
        "corpus_fingerprint": corpus_fingerprint,
        "job": job,
        "options": options,
        **({} if execution is None else {"execution": execution}),
        "n_sequences": curvature.n_sequences,
        "n_tokens": curvature.n_tokens,
        "fit_seconds": seconds,
        "layers": [{"name": layer.name, "type": layer.layer_type.__name__, "in_features": layer.shape.in_features,
                    "out_features": layer.shape.out_features, "has_bias": layer.shape.has_bias} for layer in layers],
        **({} if coverage is None else {"coverage": coverage}),
    }
    save_tensors(run_dir / "factors.safetensors", tensors)
    atomic_write_text(run_dir / "manifest.json", json.dumps(manifest, indent=2) + "\n")
    return run_dir


RUN_FIELDS: dict[str, type | tuple[type, ...]] = {
    "format": str, "job": str, "model": dict, "model.source": str, "model.fingerprint": str, "options": dict,
    "options.max_length": int, "options.pack": bool, "options.batch_size": int, "options.shard_size": int,
    "options.modules": str, "options.strategy": str, "options.fisher": str, "options.corpus": str,
    "n_sequences": int, "n_tokens": int, "layers": list, "layers[].name": str, "layers[].in_features": int,
    "layers[].out_features": int, "layers[].has_bias": bool,
}
_REFIT = "fit it again with `wherefrom fit ... --restart`."


def load_run(run_dir: Path) -> FactorRun:
    """Read a run folder written by :func:`save_run`, refusing a damaged or foreign one with a message."""
    manifest_path, factors_path = run_dir / "manifest.json", run_dir / "factors.safetensors"
    if not manifest_path.is_file() or not factors_path.is_file():
        found = folder_kind(run_dir)
        if found not in (None, FOREIGN, "run"):
            raise WherefromError(f"{run_dir} is {describe(found)}, not a fitted run; give the folder that "
                                 "`wherefrom fit --out` wrote.")
        raise WherefromError(f"{run_dir} is not a fitted run (needs manifest.json and factors.safetensors); "
                             "create one with `wherefrom fit --out RUN` (an interrupted fit resumes).")
    manifest = read_manifest(run_dir, "run", RUN_FIELDS, _REFIT)
    if manifest.get("format") != FORMAT:
        raise WherefromError(f"{run_dir} was written in format {manifest.get('format')!r}; this wherefrom reads "
                             f"{FORMAT}. Fit again with this version.")
    try:
        layers = StoredCurvature(factors_path, [entry["name"] for entry in manifest["layers"]])
    except Exception as exc:  # safetensors raises its own error type for a truncated or foreign file
        raise WherefromError(f"{factors_path} is damaged ({first_line(exc)}); {_REFIT}") from None
    missing = layers.missing(manifest["options"]["strategy"])
    if missing:
        raise WherefromError(f"{factors_path} lacks {missing}, which the manifest lists; {_REFIT}")
    return FactorRun(FittedCurvature(layers, manifest["n_sequences"], manifest["n_tokens"]), manifest)


class StoredCurvature(Mapping[str, LayerCurvature]):
    """Layers' curvature read from factors.safetensors one layer at a time, so scoring never holds all of it."""

    def __init__(self, path: Path, names: list[str]) -> None:
        self.path, self.names = path, names
        with safe_open(str(path), framework="pt") as f:
            self.keys = set(f.keys())

    def __getitem__(self, name: str) -> LayerCurvature:
        if name not in self.names:
            raise KeyError(name)
        with safe_open(str(self.path), framework="pt") as f:
            return LayerCurvature(*(self._read(f, f"{name}/{part}") for part in _PARTS))

    def _read(self, f: Any, key: str) -> Any:
        """The tensor under ``key``, the block-diagonal basis of blocks ``key/0``, ``key/1``, …, or None."""
        if key in self.keys:
            return f.get_tensor(key)
        blocks = []
        while f"{key}/{len(blocks)}" in self.keys:
            blocks.append(f.get_tensor(f"{key}/{len(blocks)}"))
        return basis_from_tensors(blocks) if blocks else None

    def missing(self, strategy: str) -> str | None:
        """The first tensor ``strategy`` needs that the file lacks, or None."""
        parts = {"identity": (), "diagonal": ("eigenvalues",)}.get(strategy, _PARTS)
        for name in self.names:
            for part in parts:
                if f"{name}/{part}" not in self.keys and f"{name}/{part}/0" not in self.keys:
                    return f"{name}/{part}"
        return None

    def __iter__(self) -> Iterator[str]:
        return iter(self.names)

    def __len__(self) -> int:
        return len(self.names)


def check_compatible(run: FactorRun, model_fingerprint: str, layers: list[TrackedLayer],
                     dtype: str | None = None) -> None:
    """Refuse factors fitted for another model or other modules, naming the difference (and the dtype, when the
    model is now loaded in another one than the run was fitted in: the weights round differently)."""
    fitted = run.manifest["model"]
    if fitted["fingerprint"] != model_fingerprint:
        fitted_dtype = run.manifest.get("execution", {}).get("dtype", "float32")
        hint = (f" The run was fitted in {fitted_dtype} and the model is loaded in {dtype} now: give --dtype "
                f"{fitted_dtype}, or fit again." if dtype is not None and dtype != fitted_dtype else "")
        raise WherefromError(
            f"these factors were fitted for model {fitted['source']} (fingerprint {fitted['fingerprint']}), not for "
            f"the model given now (fingerprint {model_fingerprint}); fit again with `wherefrom fit` for this model."
            + hint
        )
    expected = [(e["name"], e["in_features"], e["out_features"], e["has_bias"]) for e in run.manifest["layers"]]
    actual = [(layer.name, layer.shape.in_features, layer.shape.out_features, layer.shape.has_bias) for layer in layers]
    if expected != actual:
        missing = sorted({e[0] for e in expected} ^ {a[0] for a in actual})[:4]
        raise WherefromError(f"the factors track other modules than the model has now (differences: "
                             f"{missing or 'shapes'}); fit again with the same --modules.")

