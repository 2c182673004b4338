"""Measure a pass on a few of its own batches through the real engine: its time and the autograd graph's size.

The run's batches are formed exactly as the pass will form them (corpus order, cut at shard boundaries), so their
padding is the run's. They are ranked by padded tokens and cut into ``strata`` groups of equal count; the median
batch of each group is timed and its time scaled by the group's padded tokens over its own. A long outlier is
thus counted where it lies, and never stands for the whole corpus. A warm-up batch runs first and is not timed
(allocations, kernels, caches: one-off costs); while it runs, the tensors autograd saves for the backward pass are
counted, the part of a batch's memory that shapes alone do not tell; the smallest batch runs before it, so the
pass's own accumulator is warm too. A pass measured after another on the same model (``warm_up=False``) runs only
the smallest batch untimed, and reuses the graph's size. Timing stops after ``budget_seconds``; groups not timed then use
the timed batches' seconds per padded token.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from wherefrom.curvature.covariance import symmetric_from_upper
from wherefrom.curvature.eigen import eigendecompose
from wherefrom.data.batching import make_batches
from wherefrom.engine.execution import Execution
from wherefrom.engine.passes import Accumulator, PassPlan
from wherefrom.engine.stream import Labels, stream
from wherefrom.models.selection import TrackedLayer

_EIGH_TIMED_UP_TO = 2048  # larger factors are timed at this size and scaled by d³


@dataclass(frozen=True)
class SampleMeasure:
    """What one pass did on its timed batches."""

    seconds: float  # the whole pass, estimated
    n_sequences: int
    graph_bytes_per_token: float  # tensors saved for backward, per padded token of the warm-up batch
    timed_batches: int

    @property
    def seconds_per_sequence(self) -> float:
        return self.seconds / max(1, self.n_sequences)


def sample_rows(n: int, count: int) -> list[int]:
    """``count`` rows spread evenly over ``n`` (all rows when count ≥ n)."""
    if count >= n:
        return list(range(n))
    return [i * n // count for i in range(count)]


def run_batches(plan: PassPlan) -> list[range]:
    """The rows of each batch of a pass over ``plan``, as :func:`engine.passes.run_pass` forms them."""
    return [range(lo, min(lo + plan.batch_size, shard.stop)) for shard in plan.shards()
            for lo in range(shard.start, shard.stop, plan.batch_size)]


def padded_tokens(plan: PassPlan, rows: range) -> int:
    """Tokens of one batch with its padding: rows × the longest row."""
    return len(rows) * max(len(plan.token_lists[r]) for r in rows)


def strata(sizes: list[int], count: int) -> list[list[int]]:
    """Batch indices ranked by size and cut into at most ``count`` groups of (nearly) equal count."""
    ranked = sorted(range(len(sizes)), key=lambda i: (sizes[i], i))
    count = max(1, min(count, len(ranked)))
    return [ranked[g * len(ranked) // count:(g + 1) * len(ranked) // count] for g in range(count)]


def measure_pass(model: nn.Module, layers: list[TrackedLayer], plan: PassPlan, labels: Labels,
                 make: Callable[[list[int]], Accumulator], execution: Execution, n_strata: int = 4,
                 budget_seconds: float = 30.0, warm_up: bool = True, graph_bytes_per_token: float = 0.0
                 ) -> SampleMeasure:
    """Time the median batch of each of ``n_strata`` size groups of the pass's batches (after a warm-up batch)
    streamed into ``make(sample_lengths)``, and scale each to its group."""
    batches = run_batches(plan)
    sizes = [padded_tokens(plan, rows) for rows in batches]
    groups = strata(sizes, n_strata)
    chosen = [group[len(group) // 2] for group in groups]
    smallest = groups[0][0]  # a cheap warm-up of the pass's own accumulator; the model's, at a real size, first
    warm = [smallest, chosen[len(chosen) // 2]] if warm_up else [smallest]
    order = warm + chosen
    sample_rows_ = [r for b in order for r in batches[b]]
    sample = [plan.token_lists[r] for r in sample_rows_]
    accumulator = make([len(t) for t in sample])
    items = stream(model, layers, _sample_batches(sample, [plan.first_targets[r] for r in sample_rows_],
                                                  [len(batches[b]) for b in order], execution.device),
                   len(order), labels, accumulator, "timing sample", quiet=True)
    wait_for_device(next(items).loss)
    if warm_up:
        counter = _SavedTensorBytes(model)
        with torch.autograd.graph.saved_tensors_hooks(counter.pack, lambda tensor: tensor):
            second = next(items)
        wait_for_device(second.loss)
        graph_bytes_per_token = counter.total / second.batch.input_ids.numel()
    timed: list[float] = []
    begin = start = time.perf_counter()
    for item in items:
        wait_for_device(item.loss)
        now = time.perf_counter()
        timed.append(now - start)
        if now - begin > budget_seconds:
            break
        start = time.perf_counter()
    items.close()  # removes the hooks when timing stopped early
    per_token = statistics.median(t / sizes[b] for t, b in zip(timed, chosen))
    seconds = sum(timed[g] * sum(sizes[b] for b in group) / sizes[chosen[g]] if g < len(timed)
                  else per_token * sum(sizes[b] for b in group) for g, group in enumerate(groups))
    return SampleMeasure(seconds, len(plan.token_lists), graph_bytes_per_token, len(timed))


def _sample_batches(sample: list, first_targets: list[int], counts: list[int], device: torch.device):  # noqa: ANN202
    """One batch per count of consecutive sample rows (each the run's own batch, padding included)."""
    lo = 0
    for count in counts:
        yield from make_batches(sample, first_targets, count, rows=range(lo, lo + count), device=device)
        lo += count


def eigh_seconds(dims: Sequence[int], device: torch.device = torch.device("cpu")) -> float:
    """Seconds of the fit's float64 eigendecompositions of these sizes on ``device``: each distinct size timed
    once on a random symmetric matrix (after a warm-up), sizes beyond 2048 timed at 2048 and scaled by d³."""
    generator = torch.Generator().manual_seed(0)
    torch.linalg.eigh(torch.eye(32, dtype=torch.float64, device=device))  # warm-up: the solver's first call
    seconds: dict[int, float] = {}
    for dim in sorted(set(dims)):
        size = min(dim, _EIGH_TIMED_UP_TO)
        matrix = torch.randn(size, size + 8, dtype=torch.float64, generator=generator).to(device)
        covariance = (matrix @ matrix.T).float()  # as the sums are kept
        wait_for_device(covariance)
        start = time.perf_counter()  # the fit's steps per factor: the sum made whole, decomposed, the basis kept
        values, basis = eigendecompose("timing", "A", symmetric_from_upper(covariance.double()) / 2.0)
        wait_for_device(basis.float())
        seconds[dim] = (time.perf_counter() - start) * (dim / size) ** 3
    return sum(seconds[dim] for dim in dims)


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
