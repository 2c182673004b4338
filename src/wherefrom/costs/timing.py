"""Measure a pass on a small sample through the real engine: seconds per sequence and the autograd graph's size.

A few batches of sequences spread over the corpus run through :func:`engine.stream.stream` into the pass's own
accumulator. The first batch warms up (allocations, kernels) and is not timed; while it runs, the tensors
autograd saves for the backward pass are counted, which is the part of a batch's memory that shapes alone do
not tell (it depends on the architecture). The others are timed one by one and the median is kept, so one batch
slowed by another process on the machine does not skew the estimate; timing stops after ``budget_seconds``.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from wherefrom.data.batching import make_batches
from wherefrom.engine.execution import Execution
from wherefrom.engine.passes import Accumulator
from wherefrom.engine.stream import Labels, stream
from wherefrom.models.selection import TrackedLayer


@dataclass(frozen=True)
class SampleMeasure:
    """What one pass did on the sample."""

    seconds_per_sequence: float
    graph_bytes_per_token: float  # tensors saved for backward, per padded token of the warm-up batch


def sample_rows(n: int, count: int) -> list[int]:
    """``count`` rows spread evenly over ``n`` (all rows when count ≥ n)."""
    if count >= n:
        return list(range(n))
    return [i * n // count for i in range(count)]


def measure_pass(model: nn.Module, layers: list[TrackedLayer], token_lists: Sequence[Sequence[int]],
                 first_targets: Sequence[int], batch_size: int, labels: Labels,
                 make: Callable[[list[int]], Accumulator], execution: Execution, timed_batches: int = 5,
                 budget_seconds: float = 20.0) -> SampleMeasure:
    """Stream a warm-up batch and up to ``timed_batches`` timed batches of a sample into ``make(sample_lengths)``."""
    rows = sample_rows(len(token_lists), batch_size * (timed_batches + 1))
    sample = [token_lists[r] for r in rows]
    accumulator = make([len(t) for t in sample])
    n_batches = -(-len(sample) // batch_size)
    batches = make_batches(sample, [first_targets[r] for r in rows], batch_size, device=execution.device)
    items = stream(model, layers, batches, n_batches, labels, accumulator, "timing sample", quiet=True)
    counter = _SavedTensorBytes(model)
    start = time.perf_counter()
    with torch.autograd.graph.saved_tensors_hooks(counter.pack, lambda tensor: tensor):
        warm_up = next(items)
    wait_for_device(warm_up.loss)
    warm_up_seconds = time.perf_counter() - start
    graph_per_token = counter.total / warm_up.batch.input_ids.numel()
    per_sequence, begin = [], time.perf_counter()
    start = begin
    for item in items:
        wait_for_device(item.loss)
        now = time.perf_counter()
        per_sequence.append((now - start) / item.batch.rows.numel())
        if now - begin > budget_seconds:
            break
        start = time.perf_counter()
    items.close()  # removes the hooks when timing stopped early
    if not per_sequence:  # a corpus of one batch: the warm-up is all there is
        return SampleMeasure(warm_up_seconds / warm_up.batch.rows.numel(), graph_per_token)
    return SampleMeasure(statistics.median(per_sequence), graph_per_token)


def eigh_seconds_per_cubed_dim(dim: int = 384, repeats: int = 3) -> float:
    """Seconds of one float64 eigendecomposition divided by dim³ (its cost grows as dim³); median of ``repeats``."""
    matrix = torch.randn(dim, dim, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    symmetric = matrix @ matrix.T
    torch.linalg.eigh(symmetric[:64, :64])  # warm-up
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        torch.linalg.eigh(symmetric)
        seconds.append(time.perf_counter() - start)
    return statistics.median(seconds) / dim ** 3


def wait_for_device(tensor: torch.Tensor) -> None:
    """Let queued GPU work finish before reading the clock."""
    if tensor.is_cuda:
        torch.cuda.synchronize(tensor.device)


class _SavedTensorBytes:
    """A pack hook that adds up the distinct tensors autograd keeps for backward, weights excluded."""

    def __init__(self, model: nn.Module) -> None:
        self.weights = {p.untyped_storage().data_ptr() for p in model.parameters()}
        self.seen: set[int] = set()
        self.total = 0

    def pack(self, tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        pointer = storage.data_ptr()
        if pointer not in self.weights and pointer not in self.seen:
            self.seen.add(pointer)
            self.total += storage.nbytes()
        return tensor
