"""Measure a pass on a few of its own rows through the real engine: its time and the autograd graph's size.

A pass's time is modelled as ``a`` seconds per batch (the fixed costs: Python, hooks, kernel launches, the
accumulator's per-batch work) plus ``b`` seconds per padded token, summed over the batches the pass will form
(corpus order, cut at shard boundaries, so their padding is the run's). ``a`` and ``b`` come from two sizes of
the pass's median batch, timed through the real engine and accumulator: its first row alone, and its first half
(at least two rows). A warm-up of the one-row sample runs first, untimed (allocations, kernels, caches: one-off
costs), while the tensors autograd saves for the backward pass are counted (the part of a batch's memory that
shapes alone do not tell). The pair is timed at least twice, and again while the timing has taken less than
``budget_seconds``, at most ``max_repeats`` times; the fastest time of each size is kept, so one moment when
another process held the core does not become the estimate. Timing a fraction of one batch, not whole batches,
keeps the dry run of a large model to seconds.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from wherefrom.curvature.eigen import eigendecompose_each
from wherefrom.data.batching import make_batches
from wherefrom.engine.execution import Execution
from wherefrom.engine.passes import Accumulator, PassPlan
from wherefrom.engine.stream import Labels, stream
from wherefrom.models.selection import TrackedLayer

_EIGH_TIMED_UP_TO = 2048  # larger factors are timed at this size and scaled by d³
_MIN_REPEATS = 2  # the (one row, half batch) pair is timed at least this often


@dataclass(frozen=True)
class SampleMeasure:
    """What one pass did on its timed samples, and the whole pass it predicts."""

    seconds: float  # the whole pass, estimated: seconds_per_batch × batches + seconds_per_token × padded tokens
    n_sequences: int
    graph_bytes_per_token: float  # tensors saved for backward, per padded token of the warm-up sample
    seconds_per_batch: float
    seconds_per_token: float

    @property
    def seconds_per_sequence(self) -> float:
        return self.seconds / max(1, self.n_sequences)

    def describe(self) -> str:
        """How the time was found, for the stage's note."""
        return (f"{self.seconds_per_batch * 1000:.1f} ms per batch + {self.seconds_per_token * 1e6:.1f} µs per "
                f"padded token, timed on parts of a median batch: {self.seconds_per_sequence * 1000:.2f} "
                f"ms/sequence × {self.n_sequences}")


def sample_rows(n: int, count: int) -> list[int]:
    """``count`` rows spread evenly over ``n`` (all rows when count ≥ n)."""
    if count >= n:
        return list(range(n))
    return [i * n // count for i in range(count)]


def padded_tokens(plan: PassPlan, rows: Sequence[int]) -> int:
    """Tokens of one batch with its padding: rows × the longest row."""
    return len(rows) * max(len(plan.token_lists[r]) for r in rows)


def median_batch(plan: PassPlan) -> list[int]:
    """The pass's batch of median padded size (the earlier one of equal sizes)."""
    batches = plan.batches()
    ranked = sorted(range(len(batches)), key=lambda i: (padded_tokens(plan, batches[i]), i))
    return batches[ranked[len(ranked) // 2]]


def fit_cost_line(small: tuple[int, float], large: tuple[int, float]) -> tuple[float, float]:
    """Seconds per batch and per padded token through two (padded tokens, seconds) samples; all per token when
    the two sizes are equal or noise makes either part negative."""
    (n_small, t_small), (n_large, t_large) = small, large
    if n_large > n_small:
        per_token = (t_large - t_small) / (n_large - n_small)
        per_batch = t_small - per_token * n_small
        if per_token > 0 and per_batch >= 0:
            return per_batch, per_token
    return 0.0, t_large / n_large


def measure_pass(model: nn.Module, layers: list[TrackedLayer], plan: PassPlan, labels: Labels,
                 make: Callable[[list[int]], Accumulator], execution: Execution, budget_seconds: float = 2.0,
                 max_repeats: int = 3) -> SampleMeasure:
    """Time the first row and the first half of the pass's median batch, streamed into ``make(sample_lengths)``
    (after an untimed warm-up of the first row), and scale the cost line through them to every batch."""
    batches = plan.batches()
    median = median_batch(plan)
    small, large = median[:1], median[:max(2, len(median) // 2)]
    samples = [small] + [small, large] * max_repeats
    rows = [r for sample in samples for r in sample]
    accumulator = make([len(plan.token_lists[r]) for r in rows])
    items = stream(model, layers, _sample_batches([plan.token_lists[r] for r in rows],
                                                  [plan.first_targets[r] for r in rows],
                                                  [len(sample) for sample in samples], execution.device),
                   len(samples), labels, accumulator, "timing sample", quiet=True)
    counter = _SavedTensorBytes(model)
    with torch.autograd.graph.saved_tensors_hooks(counter.pack, lambda tensor: tensor):
        first = next(items)
    wait_for_device(first.loss)
    graph_bytes_per_token = counter.total / first.batch.input_ids.numel()
    fastest = {id(small): float("inf"), id(large): float("inf")}
    begin = start = time.perf_counter()
    for timed, (sample, item) in enumerate(zip(samples[1:], items), start=1):
        wait_for_device(item.loss)
        now = time.perf_counter()
        fastest[id(sample)] = min(fastest[id(sample)], now - start)
        if sample is large and timed >= 2 * _MIN_REPEATS and now - begin > budget_seconds:
            break
        start = time.perf_counter()
    items.close()  # removes the hooks when timing stopped early
    per_batch, per_token = fit_cost_line((padded_tokens(plan, small), fastest[id(small)]),
                                         (padded_tokens(plan, large), fastest[id(large)]))
    seconds = per_batch * len(batches) + per_token * sum(padded_tokens(plan, rows) for rows in batches)
    return SampleMeasure(seconds, len(plan.token_lists), graph_bytes_per_token, per_batch, per_token)


def _sample_batches(sample: list, first_targets: list[int], counts: list[int], device: torch.device):  # noqa: ANN202
    """One batch per count of consecutive sample rows (each the run's own batch, padding included)."""
    lo = 0
    for count in counts:
        yield from make_batches(sample, first_targets, count, rows=range(lo, lo + count), device=device)
        lo += count


def eigh_seconds(dims: Sequence[int], device: torch.device = torch.device("cpu")) -> float:
    """Seconds of the fit's float64 eigendecompositions of these sizes on ``device``: each distinct size timed
    once, as the fit runs it (as many factors at once as it decomposes side by side), after a warm-up; sizes
    beyond 2048 timed at 2048 and scaled by d³."""
    generator = torch.Generator().manual_seed(0)
    at_once = torch.get_num_threads() if device.type == "cpu" else 1
    list(eigendecompose_each([("timing", "warm-up", torch.eye(32, dtype=torch.float64, device=device))] * at_once,
                             torch.float32))  # the solver's first call (on the CPU: compiling it, or loading it)
    seconds: dict[int, float] = {}
    for dim in sorted(set(dims)):
        size = min(dim, _EIGH_TIMED_UP_TO)
        matrix = torch.randn(size, size + 8, dtype=torch.float64, generator=generator).to(device)
        covariance = (matrix @ matrix.T).float()  # as the sums are kept
        wait_for_device(covariance)
        start = time.perf_counter()  # the fit's steps per factor: the sum made whole, decomposed, the basis kept
        factors = (("timing", "A", covariance.double().div_(2.0)) for _ in range(at_once))
        for _, basis in eigendecompose_each(factors, torch.float32):
            wait_for_device(basis)
        seconds[dim] = (time.perf_counter() - start) / at_once * (dim / size) ** 3
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
