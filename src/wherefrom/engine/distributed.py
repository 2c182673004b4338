"""torch.distributed glue: every pass splits its shards across ranks, then sums their additive states.

Started by torchrun (RANK, WORLD_SIZE, MASTER_ADDR set), wherefrom joins the process group itself: NCCL when the
execution device is a GPU, gloo when it is the CPU. Each tensor is reduced where it lives: NCCL reduces GPU
tensors, so a host tensor (factor sums kept on the host, score columns) visits the GPU for its reduction.
Without torchrun everything runs as a world of one.
"""

from __future__ import annotations

import atexit
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class World:
    """This process's rank among ``size`` processes."""

    rank: int = 0
    size: int = 1

    @property
    def is_main(self) -> bool:
        """Rank 0 writes final outputs and shows progress."""
        return self.rank == 0

    def owns(self, index: int) -> bool:
        """Whether shard (or layer) ``index`` is this rank's work (round-robin)."""
        return index % self.size == self.rank

    def sum(self, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Element-wise sum over ranks of each tensor (in place; a no-op for a world of one)."""
        if self.size > 1:
            gpu = dist.get_backend() == "nccl"
            for value in tensors.values():
                # Reduce in row-major memory: ranks must agree on the layout (eigh returns column-major Q).
                buffer = value if value.is_contiguous() else value.contiguous()
                if gpu and not buffer.is_cuda:
                    buffer = buffer.to(torch.cuda.current_device())
                dist.all_reduce(buffer, op=dist.ReduceOp.SUM)
                if buffer is not value:
                    value.copy_(buffer)
        return tensors

    def barrier(self) -> None:
        """Wait for every rank."""
        if self.size > 1:
            dist.barrier()


def is_first_rank() -> bool:
    """Whether this process is rank 0 (or runs alone), known before any process group is joined."""
    return int(os.environ.get("RANK", "0")) == 0


def current_world(device: torch.device | None = None) -> World:
    """The world this process belongs to, joining torchrun's process group on first use: NCCL when ``device`` (the
    execution's) is a GPU, gloo otherwise."""
    if "WORLD_SIZE" in os.environ and int(os.environ["WORLD_SIZE"]) > 1 and not dist.is_initialized():
        gpu = device is not None and device.type == "cuda"
        if gpu:
            torch.cuda.set_device(device)
        dist.init_process_group(backend="nccl" if gpu else "gloo")
        atexit.register(dist.destroy_process_group)
    if dist.is_initialized():
        return World(dist.get_rank(), dist.get_world_size())
    return World()
