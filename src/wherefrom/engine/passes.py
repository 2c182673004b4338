"""Sharded, resumable, distributed passes over a corpus: the one loop every consumer runs in.

A pass cuts the sequences into shards of contiguous rows. Each rank streams the shards it owns into a fresh
accumulator and saves that shard's state atomically before merging it into its total, so a run killed at any
moment (SIGKILL included) restarts where it stopped: finished shards are read back, never recomputed or
counted twice. Accumulator states are additive, so ranks combine by summing their totals.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from wherefrom.data.batching import make_batches
from wherefrom.engine.distributed import World
from wherefrom.engine.stream import Labels, StreamBatch, stream
from wherefrom.errors import WherefromError
from wherefrom.fileio import atomic_write, atomic_write_text
from wherefrom.models.selection import TrackedLayer


class Accumulator(Protocol):
    """A pass's consumer: folds batches into additive tensors."""

    def update(self, item: StreamBatch) -> None:
        """Fold one batch in."""

    def state(self) -> dict[str, torch.Tensor]:
        """What this accumulator holds, compactly (saved per shard)."""

    def merge(self, state: dict[str, torch.Tensor]) -> None:
        """Add a state produced by :meth:`state` of another accumulator."""

    def totals(self) -> dict[str, torch.Tensor]:
        """The full additive tensors, same shapes on every rank (summed across ranks in place)."""


@dataclass(frozen=True)
class Checkpoints:
    """Where finished shards of a job are kept, and the fingerprint that says which job they belong to."""

    folder: Path | None
    fingerprint: str

    def open(self, restart: bool) -> None:
        """Check (or start) the job folder; refuse shards of a different job unless ``restart``."""
        if self.folder is None:
            return
        job = self.folder / "job.json"
        if job.is_file():
            previous = json.loads(job.read_text()).get("fingerprint")
            if previous != self.fingerprint and not restart:
                raise WherefromError(
                    f"{self.folder} holds finished shards of a run with other options, model, corpus or queries; "
                    "run the same command as before to resume it, or add --restart to discard them and start over."
                )
            if previous != self.fingerprint:
                shutil.rmtree(self.folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        if not job.is_file():
            atomic_write_text(job, json.dumps({"fingerprint": self.fingerprint}) + "\n")

    def has(self, name: str, index: int) -> bool:
        """Whether a shard of this pass is finished."""
        path = self._path(name, index)
        return path is not None and path.is_file()

    def load(self, name: str, index: int) -> dict[str, torch.Tensor] | None:
        """A finished shard's state, or None."""
        path = self._path(name, index)
        return load_file(str(path)) if path is not None and path.is_file() else None

    def save(self, name: str, index: int, state: dict[str, torch.Tensor]) -> None:
        """Keep a finished shard's state (atomically)."""
        path = self._path(name, index)
        if path is not None:
            tensors = {k: v.contiguous() for k, v in state.items()}
            atomic_write(path, lambda p: save_file(tensors, str(p)))

    def finish(self) -> None:
        """Remove the shards once the job's outputs are written."""
        if self.folder is not None and self.folder.is_dir():
            shutil.rmtree(self.folder)

    def _path(self, name: str, index: int) -> Path | None:
        return None if self.folder is None else self.folder / f"{name}-{index:05d}.safetensors"


@dataclass(frozen=True)
class PassPlan:
    """What to stream: token lists, where targets start, and how to cut the work."""

    token_lists: Sequence[Sequence[int]]
    first_targets: Sequence[int]
    batch_size: int
    shard_size: int

    def shards(self) -> list[range]:
        n = len(self.token_lists)
        return [range(lo, min(lo + self.shard_size, n)) for lo in range(0, n, self.shard_size)]


def run_pass(model: nn.Module, layers: list[TrackedLayer], plan: PassPlan, labels: Labels, name: str,
             description: str, make: Callable[[], Accumulator], checkpoints: Checkpoints, world: World,
             quiet: bool = False) -> Accumulator:
    """Stream this rank's shards into accumulators (resuming finished ones) and sum the totals across ranks."""
    total = make()
    shards = plan.shards()
    mine = [i for i in range(len(shards)) if world.owns(i)]
    todo = {i for i in mine if not checkpoints.has(name, i)}
    n_batches = sum(-(-len(shards[i]) // plan.batch_size) for i in todo)
    progress = stream(model, layers, _batches(plan, [shards[i] for i in sorted(todo)]), n_batches, labels,
                      description, quiet or not world.is_main)
    for i in mine:
        state = None if i in todo else checkpoints.load(name, i)
        if state is None:
            shard = make()
            for _ in range(-(-len(shards[i]) // plan.batch_size)):
                shard.update(next(progress))
            state = shard.state()
            checkpoints.save(name, i, state)
        total.merge(state)
    for _ in progress:  # close the stream (removes hooks, ends the progress bar)
        pass
    world.sum(total.totals())
    return total


def _batches(plan: PassPlan, shards: list[range]):  # noqa: ANN202 - a generator of Batch
    for shard in shards:
        yield from make_batches(plan.token_lists, plan.first_targets, plan.batch_size, rows=shard)
