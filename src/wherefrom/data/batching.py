"""Pad token sequences into batches with masks saying which positions exist and which predictions count."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch


@dataclass
class Batch:
    """Right-padded token ids of some rows.

    ``target_mask[b, t]`` is 1 when token t of row b is a prediction that enters the loss (it is predicted at
    position t-1); position 0 is never a target.
    """

    rows: torch.Tensor  # [B] row index of each sequence (on the CPU: it indexes host arrays)
    input_ids: torch.Tensor  # [B, T], like the two masks on the batch's device
    attention_mask: torch.Tensor  # [B, T]
    target_mask: torch.Tensor  # [B, T]


def make_batches(sequences: Sequence[Sequence[int]], first_targets: Sequence[int], batch_size: int,
                 rows: Sequence[int] | None = None, device: torch.device | str = "cpu") -> Iterator[Batch]:
    """Batches of ``batch_size`` sequences on ``device``; tokens from ``first_targets[i]`` on are the targets of
    sequence i."""
    rows = list(range(len(sequences))) if rows is None else list(rows)
    for lo in range(0, len(rows), batch_size):
        chunk = rows[lo:lo + batch_size]
        width = max(len(sequences[r]) for r in chunk)
        input_ids = torch.zeros(len(chunk), width, dtype=torch.long)
        attention = torch.zeros(len(chunk), width, dtype=torch.long)
        targets = torch.zeros(len(chunk), width, dtype=torch.long)
        for b, r in enumerate(chunk):
            n = len(sequences[r])
            input_ids[b, :n] = torch.tensor(sequences[r], dtype=torch.long)
            attention[b, :n] = 1
            targets[b, max(first_targets[r], 1):n] = 1
        yield Batch(torch.tensor(chunk), *(t.to(device, non_blocking=True) for t in (input_ids, attention, targets)))
