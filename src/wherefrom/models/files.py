"""What a model source must hold before anything is loaded: weights in safetensors (never pickle, unless the
user opts in), a config, and nothing missing."""

from __future__ import annotations

from pathlib import Path

from wherefrom.errors import WherefromError

SAFE_WEIGHTS = ("model*.safetensors", "adapter_model.safetensors", "model.safetensors.index.json")
PICKLE_WEIGHTS = ("pytorch_model*.bin", "adapter_model.bin", "*.pt", "*.pth", "*.ckpt", "*.pkl", "*.pickle")
PICKLE_FLAG = "--allow-pickle"


def check_model_source(path: Path, allow_pickle: bool = False) -> None:
    """Refuse a model source that is missing, holds no weights, or holds only pickle weights (unless allowed)."""
    if not path.exists():
        raise WherefromError(f"model {str(path)!r} not found: give a local Hugging Face model directory, "
                             "a .gguf file, or a PEFT adapter directory (nothing is downloaded).")
    if path.is_file():
        if path.suffix != ".gguf":
            raise WherefromError(f"model {path} is a file but not a .gguf file; give a Hugging Face model folder, a "
                                 ".gguf file, or a PEFT adapter folder.")
        return
    if not (path / "config.json").is_file() and not (path / "adapter_config.json").is_file():
        raise WherefromError(f"{path} is neither a .gguf file nor a folder with config.json or adapter_config.json.")
    if any(next(path.glob(pattern), None) for pattern in SAFE_WEIGHTS):
        return
    pickles = sorted({p.name for pattern in PICKLE_WEIGHTS for p in path.glob(pattern)})
    if pickles and not allow_pickle:
        raise WherefromError(
            f"{path} holds only pickle weights ({pickles[0]}), and wherefrom reads no pickle (loading one can run "
            f"code). Convert once: python -c \"import transformers as t; t.AutoModelForCausalLM.from_pretrained("
            f"'{path}').save_pretrained('{path}')\" — or, if you trust the file, add {PICKLE_FLAG}.")
    if not pickles:
        raise WherefromError(f"{path} holds no model weights (no model.safetensors); copy the weights into the folder "
                             "or give the folder that has them.")
