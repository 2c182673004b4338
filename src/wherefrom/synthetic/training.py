"""Seeded training of the demo model on CPU: one document per sequence, AdamW, warmup then cosine decay."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from transformers import PreTrainedModel

from wherefrom.synthetic.config import TrainingConfig

IGNORED_LABEL = -100  # label value the Hugging Face loss skips


@dataclass
class TrainingReport:
    """What a training run did: the first batch's loss before any step, each epoch's mean loss, the time taken."""

    initial_loss: float
    epoch_losses: list[float] = field(default_factory=list)
    steps: int = 0
    seconds: float = 0.0


def train_model(model: PreTrainedModel, sequences: Sequence[Sequence[int]], config: TrainingConfig, pad_id: int,
                seed: int, quiet: bool = False, after_epoch: Callable[[int, int], None] | None = None) -> TrainingReport:
    """Train ``model`` in place on token sequences (loss on every token after the first), seeded.
    ``after_epoch(epoch, steps)`` (epochs from 1) runs after each epoch, e.g. to save a checkpoint."""
    if not sequences:
        raise ValueError("no training sequence: the corpus is empty")
    limit = model.config.max_position_embeddings
    too_long = [i for i, s in enumerate(sequences) if len(s) > limit]
    if too_long:
        raise ValueError(f"{len(too_long)} sequences (first: #{too_long[0]}) are longer than the model's "
                         f"context of {limit} tokens; raise ModelConfig.context_length")
    generator = torch.Generator().manual_seed(seed)
    lengths = [len(s) for s in sequences]
    steps_per_epoch = math.ceil(len(sequences) / config.batch_size)  # windows hold whole batches
    total_steps = config.epochs * steps_per_epoch
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay,
                                  betas=(0.9, 0.98))
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, _warmup_cosine(total_steps, config.warmup_fraction))
    report = TrainingReport(initial_loss=float("nan"))
    start = time.perf_counter()
    model.train()
    with _progress(quiet) as progress:
        task = progress.add_task("training demo model", total=total_steps, loss=float("nan"))
        for _ in range(config.epochs):
            epoch_loss = 0.0
            for rows in _length_grouped_batches(lengths, config.batch_size, generator):
                input_ids, labels = _batch([sequences[i] for i in rows], pad_id)
                # Right padding needs no attention mask: causal attention never lets a real token see a later pad.
                loss = model(input_ids=input_ids, labels=labels).loss
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                schedule.step()
                value = loss.item()
                if report.steps == 0:
                    report.initial_loss = value
                report.steps += 1
                epoch_loss += value
                progress.update(task, advance=1, loss=value)
            report.epoch_losses.append(epoch_loss / steps_per_epoch)
            if after_epoch is not None:
                model.eval()
                after_epoch(len(report.epoch_losses), report.steps)
                model.train()
    model.eval()
    report.seconds = time.perf_counter() - start
    return report


def _length_grouped_batches(lengths: list[int], batch_size: int, generator: torch.Generator) -> list[list[int]]:
    """A random order cut into batches of similar lengths (less padding), the batches in random order.

    Windows of 4 batches from a random permutation are each sorted by length before being cut.
    """
    order = torch.randperm(len(lengths), generator=generator).tolist()
    window = 4 * batch_size
    batches = []
    for lo in range(0, len(order), window):
        chunk = sorted(order[lo:lo + window], key=lengths.__getitem__)
        batches += [chunk[i:i + batch_size] for i in range(0, len(chunk), batch_size)]
    return [batches[i] for i in torch.randperm(len(batches), generator=generator).tolist()]


def _batch(sequences: list[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded input ids, and labels with the padding ignored."""
    width = max(len(s) for s in sequences)
    input_ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    labels = torch.full((len(sequences), width), IGNORED_LABEL, dtype=torch.long)
    for row, sequence in enumerate(sequences):
        input_ids[row, :len(sequence)] = torch.tensor(sequence)
        labels[row, :len(sequence)] = torch.tensor(sequence)
    return input_ids, labels


def _warmup_cosine(total_steps: int, warmup_fraction: float) -> Callable[[int], float]:
    """Learning-rate factor: linear warmup, then cosine decay to a tenth of the peak."""
    warmup = max(1, round(total_steps * warmup_fraction))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total_steps - warmup)
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return factor


@contextmanager
def cpu_threads(count: int) -> Iterator[None]:
    """Run the block with torch using ``count`` CPU threads (on a busy machine 1 can beat 2), then restore."""
    if count < 1:
        raise ValueError(f"the number of CPU threads must be at least 1; got {count}")
    previous = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _progress(quiet: bool) -> Progress:
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("loss {task.fields[loss]:.3f}"), TimeElapsedColumn(), TimeRemainingColumn())
    return Progress(*columns, console=Console(stderr=True), disable=quiet)
