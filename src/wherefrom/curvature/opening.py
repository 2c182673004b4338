"""Open a fitted run folder: its factors, the model they were fitted for (checked), its tracked layers, its corpus.

The one way `score`, `index`, `check`, the explorer and the dry runs start from a run folder.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from wherefrom.curvature.fitting import FittedCurvature
from wherefrom.curvature.store import FactorRun, check_compatible, load_run
from wherefrom.data.corpus import TrainingSequence, build_sequences
from wherefrom.data.records import read_records
from wherefrom.engine.execution import load_for_execution
from wherefrom.models.loading import LoadedModel
from wherefrom.models.positions import cap_max_length
from wherefrom.models.selection import TrackedLayer, select_layers
from wherefrom.options import DataOptions, ExecutionOptions


@dataclass
class OpenedRun:
    """A fitted run with the model its factors belong to, loaded and checked against them."""

    folder: Path
    factors: FactorRun
    loaded: LoadedModel
    layers: list[TrackedLayer]  # the tracked layers, in the order the factors were fitted

    @property
    def fitted(self) -> dict[str, Any]:
        """The options the run was fitted with, as its manifest records them."""
        return self.factors.manifest["options"]

    @property
    def curvature(self) -> FittedCurvature:
        """The fitted curvature of every tracked layer."""
        return self.factors.curvature

    @property
    def data(self) -> dict[str, Any]:
        """How the run cut its corpus into sequences: the :class:`DataOptions` fields it was fitted with (max_length
        at most the model's positions, as the fit itself caps it)."""
        data = {field.name: self.fitted[field.name] for field in fields(DataOptions)}
        return {**data, "max_length": cap_max_length(self.loaded.model, data["max_length"], quiet=True)}

    def corpus_path(self, corpus: str | Path | None = None) -> Path:
        """``corpus``, or the corpus the run was fitted on when it is None."""
        return Path(corpus if corpus is not None else self.fitted["corpus"])

    def sequences(self, corpus: str | Path | None, max_length: int, pack: bool) -> list[TrainingSequence]:
        """The training sequences of ``corpus`` (None: the fitted corpus), cut as ``max_length`` and ``pack`` say."""
        return build_sequences(read_records(self.corpus_path(corpus)), self.loaded.tokenizer, max_length, pack)


def open_run(run: str | Path, model: str | Path | LoadedModel | None = None,
             execution: ExecutionOptions = ExecutionOptions()) -> OpenedRun:
    """Open the run folder ``run`` with its own model (or ``model``), refusing a model or modules it was not fitted
    for. A model given as a path (or taken from the manifest) is loaded where ``execution`` says, in the dtype the
    run was fitted in unless it names another; a :class:`LoadedModel` stays where it is."""
    factors = load_run(Path(run))
    source = model if model is not None else factors.manifest["model"]["source"]
    # a run fitted with --allow-pickle loads its model the same way; any other loads safetensors only
    loaded = source if isinstance(source, LoadedModel) else load_for_execution(
        source, execution, factors.manifest.get("execution"), allow_pickle=factors.allow_pickle)
    layers = select_layers(loaded.model, factors.manifest["options"]["modules"])
    dtype = str(next(loaded.model.parameters()).dtype).removeprefix("torch.")
    check_compatible(factors, loaded.fingerprint, layers, dtype)
    return OpenedRun(Path(run), factors, loaded, layers)
