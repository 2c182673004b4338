"""What a compared model is: its parameter count and, for a checkpoint, its training step.

Parameters: ``n_parameters`` in the run's manifest when recorded, else the sum of the tensor sizes listed in the
headers of the model folder's ``*.safetensors`` files (headers only; no weight is read). Training step:
``global_step`` of the model folder's ``trainer_state.json`` (what Hugging Face's Trainer writes into each
checkpoint), else the number in a folder name like ``checkpoint-500`` or ``step_500``. Either is None when
unknown (a moved model folder, a .gguf file).
"""

from __future__ import annotations

import json
import math
import re
import struct
from pathlib import Path

from wherefrom.scoring.results import ScoreResult

_STEP_NAME = re.compile(r"(?:checkpoint|step)[-_]?(\d+)$", re.IGNORECASE)
_MAX_HEADER = 100_000_000  # a safetensors header longer than this is not one


def parameter_count(result: ScoreResult) -> int | None:
    """The scored model's number of parameters (see the module docstring), or None."""
    run = _json(Path(str(result.metadata.get("run", ""))) / "manifest.json")
    if isinstance(run, dict) and isinstance(run.get("n_parameters"), int):
        return int(run["n_parameters"])
    model = Path(str(result.metadata.get("model", "")))
    files = sorted(model.glob("*.safetensors")) if model.is_dir() else []
    counts = [_tensor_elements(f) for f in files]
    return sum(counts) if files and None not in counts else None  # type: ignore[arg-type]


def training_step(result: ScoreResult) -> int | None:
    """The training step of the scored checkpoint (see the module docstring), or None."""
    model = Path(str(result.metadata.get("model", "")))
    state = _json(model / "trainer_state.json") if model.is_dir() else None
    if isinstance(state, dict) and isinstance(state.get("global_step"), int):
        return int(state["global_step"])
    match = _STEP_NAME.search(model.name)
    return int(match.group(1)) if match else None


def _tensor_elements(path: Path) -> int | None:
    """Sum of the element counts of the tensors a safetensors file lists (its JSON header), or None."""
    try:
        with path.open("rb") as f:
            (length,) = struct.unpack("<Q", f.read(8))
            if length > _MAX_HEADER:
                return None
            header = json.loads(f.read(length))
        return sum(math.prod(entry["shape"]) for name, entry in header.items() if name != "__metadata__")
    except (OSError, ValueError, KeyError, TypeError, struct.error):
        return None


def _json(path: Path) -> object:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
