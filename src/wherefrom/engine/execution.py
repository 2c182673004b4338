"""Where and how a command runs: the device, the model's dtype, the dtype sums are kept in, where factor sums
live, and the process group. Built once per command (``start_execution``) from :class:`ExecutionOptions` and the
environment (under torchrun, LOCAL_RANK picks the GPU), then handed to the stream, the passes and every
accumulator: nothing below the CLI and the API decides a device or a dtype on its own.

Precision policy (docs/precision.md; each rule is also stated where it is applied):

- forward and backward in ``dtype`` (``--dtype``); the captured ā and Ds stay in ``dtype``;
- A, S and Λ are summed in ``accumulation_dtype``: float32 whatever the model's dtype (float64 only when the
  model itself runs in float64, as the exactness tests do);
- eigendecompositions in float64; the bases Q_A, Q_S are kept in ``accumulation_dtype``;
- preconditioned query gradients in ``accumulation_dtype``;
- the iterative solvers' vectors, inner products and residuals in float32 (``solvers/iterative.py``), their
  Gauss-Newton products through the model in ``dtype``;
- the contraction with training gradients in ``dtype``, its per-batch results summed in float64.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from wherefrom.engine.distributed import World, current_world
from wherefrom.errors import WherefromError
from wherefrom.models.loading import LoadedModel, checkpoint_dtype, load_model
from wherefrom.options import DTYPES as DTYPE_CHOICES
from wherefrom.options import FACTOR_PLACES, ExecutionOptions

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16, "float64": torch.float64}
_HOST = torch.device("cpu")
_FREE_SHARE = 0.5  # of the GPU's free memory that factor sums may take before they go to the host


@dataclass(frozen=True)
class Execution:
    """This process's execution: model device and dtype, the accumulation dtype, factor placement, world."""

    device: torch.device = field(default_factory=lambda: _HOST)
    dtype: torch.dtype = torch.float32
    world: World = field(default_factory=World)
    factors_on_host: bool = False  # A, S, Λ sums kept in host memory, each batch's part formed on the device

    @property
    def accumulation_dtype(self) -> torch.dtype:
        """The dtype of A, S, Λ sums, bases and preconditioned queries: float32 (float64 for a float64 model)."""
        return torch.float64 if self.dtype == torch.float64 else torch.float32

    @property
    def factor_device(self) -> torch.device:
        """Where the factor sums live."""
        return _HOST if self.factors_on_host else self.device

    @classmethod
    def of(cls, model: nn.Module, world: World | None = None) -> Execution:
        """The execution of a model already placed by its caller (library use and tests): where its weights are."""
        parameter = next(model.parameters())
        return cls(parameter.device, parameter.dtype, world or World())

    def describe(self) -> dict[str, object]:
        """What the manifests and ``--dry-run`` record."""
        return {"device": str(self.device), "dtype": dtype_name(self.dtype),
                "factors": "host" if self.factors_on_host else "device", "processes": self.world.size}


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def resolve_device(choice: str) -> torch.device:
    """The device an ``ExecutionOptions.device`` names; 'auto' and 'cuda' take GPU LOCAL_RANK under torchrun."""
    if choice == "cpu" or (choice == "auto" and not torch.cuda.is_available()):
        return _HOST
    if not torch.cuda.is_available():
        raise WherefromError(f"--device {choice}: this machine has no usable CUDA device (torch.cuda.is_available() "
                             "is False); use --device cpu.")
    index = int(choice[5:]) if choice.startswith("cuda:") else int(os.environ.get("LOCAL_RANK", "0"))
    if index >= torch.cuda.device_count():
        raise WherefromError(f"--device {choice}: GPU {index} does not exist; this machine has "
                             f"{torch.cuda.device_count()} (cuda:0 … cuda:{torch.cuda.device_count() - 1}).")
    return torch.device("cuda", index)


def resolve_dtype(choice: str, device: torch.device, checkpoint: torch.dtype | None,
                  fitted: str | None = None) -> torch.dtype:
    """The model dtype an ``ExecutionOptions.dtype`` names. 'auto': the dtype the run was fitted in (``fitted``)
    when there is one, else the checkpoint's own dtype on a GPU and float32 on the CPU."""
    if choice != "auto":
        return DTYPES[choice]
    if fitted is not None:
        return DTYPES[fitted]
    return (checkpoint or torch.float32) if device.type == "cuda" else torch.float32


def load_for_execution(source: str | Path, options: ExecutionOptions, fitted: dict | None = None,
                       allow_pickle: bool = False) -> LoadedModel:
    """Load ``source`` on the options' device in their dtype (``fitted``: the run's recorded execution;
    ``allow_pickle``: also read pickle-only weights, see :func:`load_model`)."""
    check_execution_options(options)
    device = resolve_device(options.device)
    dtype = resolve_dtype(options.dtype, device, checkpoint_dtype(source), (fitted or {}).get("dtype"))
    return load_model(source, dtype=dtype, device=device, allow_pickle=allow_pickle)


def start_execution(model: nn.Module, options: ExecutionOptions | None = None, factor_bytes: int = 0) -> Execution:
    """The execution of this process for a loaded model: joins torchrun's process group (NCCL when the model is on
    a GPU, gloo on the CPU) and places factor sums of ``factor_bytes`` (:func:`factors_go_to_host`)."""
    options = options or ExecutionOptions()
    check_execution_options(options)
    parameter = next(model.parameters())
    host = factors_go_to_host(options.factors, parameter.device, factor_bytes)
    return Execution(parameter.device, parameter.dtype, current_world(parameter.device), host)


def factors_go_to_host(choice: str, device: torch.device, factor_bytes: int) -> bool:
    """Whether factor sums live in host memory: asked for, or ('auto') when they would take more than half of the
    GPU memory left free next to the model (the other half is for the batches)."""
    if choice != "auto" or device.type != "cuda":
        return choice == "host"
    free, _ = torch.cuda.mem_get_info(device)
    return factor_bytes > _FREE_SHARE * free


def check_execution_options(options: ExecutionOptions) -> None:
    """The one place execution options are checked: one line naming the value and the choices."""
    device = options.device
    if not (device in ("auto", "cpu", "cuda") or (device.startswith("cuda:") and device[5:].isdigit())):
        raise WherefromError(f"--device {device!r} is not one of: auto, cpu, cuda, cuda:N (N a GPU number).")
    if options.dtype not in DTYPE_CHOICES:
        raise WherefromError(f"--dtype {options.dtype!r} is not one of: {', '.join(DTYPE_CHOICES)}.")
    if options.factors not in FACTOR_PLACES:
        raise WherefromError(f"--factors {options.factors!r} is not one of: {', '.join(FACTOR_PLACES)}.")
