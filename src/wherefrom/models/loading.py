"""Load a causal LM (and, lazily, its tokenizer) from a local HF directory, a .gguf file, or a PEFT LoRA adapter."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from wherefrom.collector import collector_paused
from wherefrom.errors import WherefromError
from wherefrom.fileio import first_line
from wherefrom.models.files import check_model_source
from wherefrom.models.tokenizer import ModelTokenizer, config_eos


@dataclass
class LoadedModel:
    """A model ready for influence passes (eval mode, frozen weights) with its tokenizer and identity."""

    model: nn.Module
    tokenizer: ModelTokenizer  # read from its files only when text is encoded or decoded
    source: str
    fingerprint: str


def load_model(source: str | Path, dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu",
               allow_pickle: bool = False) -> LoadedModel:
    """Load ``source``: an HF model directory, a ``.gguf`` file, or a PEFT adapter directory (base must be local),
    in ``dtype`` on ``device``. The fingerprint is taken on the CPU, before the move, so it does not depend on
    the device.

    Weights are read from safetensors only, unless ``allow_pickle`` (see :func:`check_model_source`).
    """
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # loading is quick; wherefrom's own bars cover the long passes
    path = Path(source)
    check_model_source(path, allow_pickle)
    try:
        with collector_paused():  # transformers imports the architecture's code: see collector.py
            model = _load(path, dtype, allow_pickle)
    except WherefromError:
        raise
    except Exception as exc:  # transformers, safetensors and peft each raise their own types
        raise WherefromError(f"cannot load the model in {path}: {first_line(exc)[:300]}") from None
    prepare_for_influence(model)
    tokenizer = _model_tokenizer(path, getattr(model, "config", None))
    fingerprint = model_fingerprint(model)
    return LoadedModel(model.to(device), tokenizer, str(path), fingerprint)


def load_tokenizer(source: str | Path) -> ModelTokenizer:
    """The tokenizer of a model ``source`` (any form :func:`load_model` takes), without loading the weights."""
    path = Path(source)
    check_model_source(path, allow_pickle=True)  # only the tokenizer is read: no weights are unpickled
    return _model_tokenizer(path, None)


def checkpoint_dtype(source: str | Path) -> torch.dtype | None:
    """The dtype a checkpoint's config.json names (an adapter's: its base model's), or None (e.g. a .gguf file)."""
    path = Path(source)
    try:  # an unreadable config is named by load_model, which reads it next
        if (path / "adapter_config.json").is_file():
            path = Path(json.loads((path / "adapter_config.json").read_text()).get("base_model_name_or_path", ""))
        config = path / "config.json"
        if not config.is_file():
            return None
        settings = json.loads(config.read_text())
    except (OSError, ValueError, AttributeError):
        return None
    if not isinstance(settings, dict):
        return None
    name = str(settings.get("dtype") or settings.get("torch_dtype") or "").removeprefix("torch.")
    dtype = getattr(torch, name, None) if name else None
    return dtype if isinstance(dtype, torch.dtype) else None


def _model_tokenizer(path: Path, config: object | None) -> ModelTokenizer:
    """The lazily loaded tokenizer of the model at ``path``: the .gguf file's, an adapter's own (else its base
    model's), or the model folder's. ``config`` (the loaded model's, if any) gives the EOS id and vocabulary size."""
    from transformers import AutoTokenizer

    files = {"gguf_file": path.name} if path.is_file() else {}
    at = path
    if (path / "adapter_config.json").is_file() and not (path / "tokenizer_config.json").is_file():
        at = _peft_base(path)
    folder = at.parent if at.is_file() else at
    return ModelTokenizer(at, lambda: AutoTokenizer.from_pretrained(folder, **files), config_eos(config),
                          getattr(config, "vocab_size", None))


def _load(path: Path, dtype: torch.dtype, allow_pickle: bool) -> nn.Module:
    """The model at ``path`` (a .gguf file, an adapter folder or a model folder), in ``dtype``."""
    from transformers import AutoModelForCausalLM

    if path.is_file():  # a .gguf file (checked by check_model_source)
        return AutoModelForCausalLM.from_pretrained(path.parent, dtype=dtype, gguf_file=path.name)
    if (path / "adapter_config.json").is_file():
        return _load_peft(path, dtype, allow_pickle)
    return AutoModelForCausalLM.from_pretrained(path, dtype=dtype, use_safetensors=None if allow_pickle else True)


def _peft_base(path: Path) -> Path:
    """The local base model folder an adapter names."""
    base = json.loads((path / "adapter_config.json").read_text()).get("base_model_name_or_path", "")
    if not base or not Path(base).is_dir():
        raise WherefromError(f"the adapter in {path} names base model {base!r}, which is not a local folder; "
                             "edit base_model_name_or_path in adapter_config.json to point at it.")
    return Path(base)


def _load_peft(path: Path, dtype: torch.dtype, allow_pickle: bool) -> nn.Module:
    """The adapter at ``path`` on its local base model."""
    from transformers import AutoModelForCausalLM

    try:
        from peft import PeftModel
    except ImportError as exc:
        raise WherefromError("loading a LoRA adapter needs peft: pip install 'wherefrom[peft]'") from exc
    base = _peft_base(path)
    check_model_source(base, allow_pickle)
    model = AutoModelForCausalLM.from_pretrained(base, dtype=dtype, use_safetensors=None if allow_pickle else True)
    return PeftModel.from_pretrained(model, path)


def prepare_for_influence(model: nn.Module) -> nn.Module:
    """Eval mode (no dropout) and frozen weights: passes compute layer gradients from activations, never .grad."""
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def model_fingerprint(model: nn.Module) -> str:
    """A hash of the model's config and every parameter's name, shape and first two moments (float64).

    Cheap (one reduction per tensor) and changes with any fine-tuning step, so factors fitted for one model are
    never silently used with another.
    """
    h = hashlib.sha256()
    config = getattr(model, "config", None)
    if config is not None and hasattr(config, "to_dict"):
        settings = {k: v for k, v in config.to_dict().items() if k not in ("_name_or_path", "transformers_version")}
        h.update(json.dumps(settings, sort_keys=True, default=str).encode())
    chunk64 = torch.empty(1 << 20, dtype=torch.float64)  # float64 moments chunk by chunk, in one reused buffer
    with torch.no_grad():
        for name, p in model.named_parameters():
            total, squares = 0.0, 0.0
            for chunk in p.detach().reshape(-1).split(1 << 20):
                values = chunk64[:chunk.numel()].copy_(chunk)
                total, squares = total + float(values.sum()), squares + float(values.square_().sum())
            h.update(f"{name}{tuple(p.shape)}{total:.12e}{squares:.12e}".encode())
    return h.hexdigest()[:16]
