"""Sharded, resumable, distributed passes over a corpus: the one loop every consumer runs in.

A pass cuts the sequences into shards of contiguous rows. Each rank streams the shards it owns, in order, into
one accumulator, and after each shard saves the accumulator's state with the list of finished shards, atomically
(after the last one only when the caller asks: the fit's last pass writes its result at once, so a run killed
while writing it redoes its last shard, and no run pays for a state it never reads).
A run killed at any moment (SIGKILL included) restarts from that state: finished shards are never recomputed or
counted twice, and the sums are formed in the same order, so the result is identical. Accumulator states are
additive, so ranks combine by summing their totals.
"""

from __future__ import annotations

import json
import shutil
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import nn

from wherefrom.data.batching import make_batches
from wherefrom.engine.distributed import World, is_first_rank
from wherefrom.engine.execution import Execution
from wherefrom.engine.stream import Labels, LayerConsumer, stream
from wherefrom.errors import WherefromError
from wherefrom.fileio import atomic_write_text, first_line, save_tensors
from wherefrom.models.selection import TrackedLayer

_DONE = "__finished_shards__"


class Accumulator(LayerConsumer, ABC):
    """A pass's consumer (fed layer by layer, see :class:`LayerConsumer`) that folds batches into additive tensors."""

    @abstractmethod
    def state(self) -> dict[str, torch.Tensor]:
        """What this accumulator holds, compactly (saved per shard)."""

    @abstractmethod
    def merge(self, state: dict[str, torch.Tensor]) -> None:
        """Add a state produced by :meth:`state` of another accumulator."""

    @abstractmethod
    def totals(self) -> dict[str, torch.Tensor]:
        """The full additive tensors, same shapes on every rank (summed across ranks in place)."""


class SummedTensors(Accumulator):
    """An accumulator whose whole state is a dict of running sums (``self.sums``): saved, merged and summed
    across ranks as it is."""

    sums: dict[str, torch.Tensor]

    def state(self) -> dict[str, torch.Tensor]:
        return self.sums

    def merge(self, state: dict[str, torch.Tensor]) -> None:
        for key, value in state.items():
            self.sums[key] += value.to(self.sums[key].device)

    def totals(self) -> dict[str, torch.Tensor]:
        return self.sums


@dataclass(frozen=True)
class Checkpoints:
    """Where finished shards of a job are kept, and the fingerprint that says which job they belong to."""

    folder: Path | None
    fingerprint: str

    def open(self, restart: bool, world: World | None = None) -> None:
        """Check (or start) the job folder; refuse finished shards of a different job unless ``restart``.

        Only finished shards pin a job: a folder holding none (a run that stopped before finishing its first
        shard) is cleared for whatever job comes next. Every rank decides alike; the first one clears.
        """
        if self.folder is None:
            return
        world = world or World()
        stale = self.folder.is_dir() and self._pinned_to() != self.fingerprint
        if stale and self._finished_states() and not restart:
            raise WherefromError(
                f"{self.folder} holds finished shards of a run with other options, model, corpus or queries; "
                "run the same command as before to resume it, or add --restart to discard them and start over."
            )
        world.barrier()  # every rank has looked before the first one clears
        if stale and world.is_main:
            shutil.rmtree(self.folder)
        if world.is_main:
            self.folder.mkdir(parents=True, exist_ok=True)
        world.barrier()

    def load(self, name: str, world: World) -> tuple[dict[str, torch.Tensor], set[int]] | None:
        """This rank's saved state of pass ``name`` and the shards it covers, or None."""
        path = self._path(name, world)
        if path is None or not path.is_file():
            return None
        try:
            state = load_file(str(path))
            return state, set(state.pop(_DONE).tolist())
        except Exception as exc:  # safetensors raises its own error type for a damaged file
            raise WherefromError(f"the saved shards {path} are damaged ({first_line(exc)}); add --restart to "
                                 "discard them and start over.") from None

    def save(self, name: str, world: World, state: dict[str, torch.Tensor], done: set[int]) -> None:
        """Keep this rank's state after a finished shard (atomically); the first one pins the job."""
        path = self._path(name, world)
        if path is not None:
            job = path.parent / "job.json"
            if not job.is_file():
                atomic_write_text(job, json.dumps({"fingerprint": self.fingerprint}) + "\n")
            tensors = {k: v.contiguous().cpu() for k, v in state.items()}
            tensors[_DONE] = torch.tensor(sorted(done), dtype=torch.long)
            save_tensors(path, tensors)

    def _pinned_to(self) -> str | None:
        """The fingerprint in job.json (None when it is missing or unreadable)."""
        try:
            return json.loads((self.folder / "job.json").read_text()).get("fingerprint")
        except (OSError, ValueError, AttributeError):
            return None

    def _finished_states(self) -> list[Path]:
        return sorted(self.folder.glob("*.rank*-of-*.safetensors"))

    def finished(self) -> bool:
        """Whether any shard of this job has finished (and its state is kept)."""
        return self.folder is not None and self.folder.is_dir() and bool(self._finished_states())

    def discard_finished(self) -> None:
        """Forget every finished shard (their results are gone): the job starts over in the same folder."""
        for path in self._finished_states():
            path.unlink()

    def finish(self) -> None:
        """Remove the shards once the job's outputs are written."""
        if self.folder is not None and self.folder.is_dir():
            shutil.rmtree(self.folder)

    def finish_stopped(self) -> None:
        """Remove the shards that a finished job left when it was stopped after writing its outputs but before
        removing them (the first rank does; the others leave them)."""
        if is_first_rank():
            self.finish()

    def _path(self, name: str, world: World) -> Path | None:
        # The world size is part of the name: a resume must split the shards the same way.
        return None if self.folder is None else self.folder / f"{name}.rank{world.rank}-of-{world.size}.safetensors"


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

    def shard_batches(self, shard: range) -> list[list[int]]:
        """The rows of each batch of ``shard``: its rows shortest first, so that a batch pads little (every
        consumer places results by row, and a shard's checkpoint covers all its rows whatever their order)."""
        rows = sorted(shard, key=lambda row: len(self.token_lists[row]))
        return [rows[lo:lo + self.batch_size] for lo in range(0, len(rows), self.batch_size)]

    def batches(self) -> list[list[int]]:
        """The rows of every batch of the pass, shard after shard."""
        return [batch for shard in self.shards() for batch in self.shard_batches(shard)]


def run_pass(model: nn.Module, layers: list[TrackedLayer], plan: PassPlan, labels: Labels, name: str,
             description: str, make: Callable[[], Accumulator], checkpoints: Checkpoints, execution: Execution,
             quiet: bool = False, save_last: bool = True) -> Accumulator:
    """Stream this rank's unfinished shards (batches on the execution's device) into one accumulator (resuming a
    saved state) and sum across ranks. ``save_last=False``: the state after the last shard is not saved (the
    caller writes the result at once; Λ of SmolLM2-135M's MLPs is 0.32 GB)."""
    world = execution.world
    total = make()
    saved = checkpoints.load(name, world)
    done: set[int] = set()
    if saved is not None:
        state, done = saved
        total.merge(state)
    shards = plan.shards()
    todo = [i for i in range(len(shards)) if world.owns(i) and i not in done]
    n_batches = sum(-(-len(shards[i]) // plan.batch_size) for i in todo)
    progress = stream(model, layers, _batches(plan, [shards[i] for i in todo], execution.device), n_batches, labels,
                      total, description, quiet or not world.is_main)
    for i in todo:
        for _ in range(-(-len(shards[i]) // plan.batch_size)):
            next(progress)
        done.add(i)
        if save_last or i != todo[-1]:
            checkpoints.save(name, world, total.state(), done)
    for _ in progress:  # close the stream (removes hooks, ends the progress bar)
        pass
    world.sum(total.totals())
    return total


def _batches(plan: PassPlan, shards: list[range], device: torch.device):  # noqa: ANN202 - a generator of Batch
    for shard in shards:
        for rows in plan.shard_batches(shard):
            yield from make_batches(plan.token_lists, plan.first_targets, len(rows), rows=rows, device=device)
