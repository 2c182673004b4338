"""Retraining recipes of the LDS: how a model is trained on a subset of its corpus, saved, and loaded back.

Every recipe trains with the same seeded loop (``synthetic.training.train_model``: AdamW, length-grouped batches,
linear warmup then cosine decay, loss on every token after the first); they differ in what is trained:

- :class:`SyntheticRecipe`: a fresh demo model from its initialisation, with the demo's own settings;
- :class:`FinetuneRecipe` ``lora``: LoRA adapters (peft) on a pretrained base; only the adapter is saved;
- :class:`FinetuneRecipe` ``full``: every weight of the pretrained base; the whole model is saved.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

from wherefrom.errors import WherefromError
from wherefrom.options import check_numbers, option
from wherefrom.synthetic.config import DemoConfig, TrainingConfig

if TYPE_CHECKING:  # torch and transformers are imported where a model is built: the CLI's --help stays quick
    from torch import nn

    from wherefrom.synthetic.training import TrainingReport

RecipeKind = Literal["lora", "full"]
EpochHook = Callable[[int, int], None]  # (epochs done, optimizer steps done), called after each epoch
RECIPE_KINDS: tuple[str, ...] = ("lora", "full")


class Recipe(Protocol):
    """How the LDS retrains: on given token sequences from a seed, into a folder that :meth:`load` reads back."""

    def describe(self) -> dict[str, Any]:
        """Everything that determines a training besides its sequences and seed (fingerprinted, reported)."""

    def tokenizer(self) -> Any:
        """The tokenizer that turns the corpus and the queries into token ids."""

    def steps(self, n_sequences: int) -> int:
        """Optimizer steps of one training on ``n_sequences`` sequences."""

    def train(self, sequences: list[tuple[int, ...]], seed: int, epochs: int | None = None,
              after_epoch: EpochHook | None = None) -> tuple[nn.Module, TrainingReport]:
        """A model trained on ``sequences`` from ``seed`` (``epochs`` overrides the recipe's, for timing);
        ``after_epoch(epoch, steps so far)`` runs after each epoch (progress)."""

    def save(self, model: nn.Module, folder: Path) -> None:
        """Write a trained model into ``folder`` (the caller makes the write atomic)."""

    def load(self, folder: Path) -> nn.Module:
        """The model saved in ``folder``, in eval mode."""


def _steps(n_sequences: int, training: TrainingConfig) -> int:
    return training.epochs * math.ceil(n_sequences / training.batch_size)


@dataclass(frozen=True)
class SyntheticRecipe:
    """The demo model retrained from scratch with the demo's settings (the demo folder gives its tokenizer)."""

    demo_dir: Path
    config: DemoConfig

    def describe(self) -> dict[str, Any]:
        return {"recipe": "synthetic", "model": asdict(self.config.model), "training": asdict(self.config.training)}

    def tokenizer(self) -> Any:
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(self.demo_dir)

    def steps(self, n_sequences: int) -> int:
        return _steps(n_sequences, self.config.training)

    def train(self, sequences: list[tuple[int, ...]], seed: int, epochs: int | None = None,
              after_epoch: EpochHook | None = None) -> tuple[nn.Module, TrainingReport]:
        from wherefrom.synthetic.model import build_model
        from wherefrom.synthetic.training import train_model

        tokenizer = self.tokenizer()
        training = self.config.training if epochs is None else replace(self.config.training, epochs=epochs)
        model = build_model(self.config.model, tokenizer, seed)
        return model, train_model(model, sequences, training, tokenizer.pad_token_id, seed, quiet=True,
                                  after_epoch=after_epoch)

    def save(self, model: nn.Module, folder: Path) -> None:
        model.save_pretrained(folder)

    def load(self, folder: Path) -> nn.Module:
        from transformers import AutoModelForCausalLM

        return AutoModelForCausalLM.from_pretrained(folder).eval()


@dataclass(frozen=True)
class FinetuneOptions:
    """How `validate lds --model` fine-tunes the base model on each subset (and on the whole corpus)."""

    recipe: RecipeKind = option("lora", "'lora': train LoRA adapters (peft) and save only them; 'full': train and "
                                        "save every weight of the base model.")
    epochs: int = option(2, "Passes over the subset's documents per training.")
    learning_rate: float = option(1e-3, "Peak AdamW learning rate (linear warmup, then cosine decay to a tenth); "
                                        "for --recipe full something like 5e-5.")
    batch_size: int = option(8, "Documents per optimizer step.")
    warmup_fraction: float = option(0.1, "Share of the steps with a linearly rising learning rate.")
    seed: int = option(0, "Training seed (LoRA initialisation, batch order) of the explained model and of each "
                          "subset's first retraining; further --seeds count up from it.")
    lora_rank: int = option(8, "LoRA rank r.")
    lora_alpha: float = option(16.0, "LoRA scale α (the update is α/r · B A).")
    lora_targets: str = option("gate_proj,up_proj,down_proj",
                               "Comma-separated names of the linear layers that get adapters (default: the MLP's, "
                               "the layers influence tracks).")
    max_length: int = option(64, "Tokens per training document (longer ones are truncated) and per query.")

    def __post_init__(self) -> None:
        if self.recipe not in RECIPE_KINDS:
            raise WherefromError(f"--recipe {self.recipe!r} is not one of: {', '.join(RECIPE_KINDS)}.")
        for flag, value in (("--epochs", self.epochs), ("--batch-size", self.batch_size),
                            ("--lora-rank", self.lora_rank), ("--max-length", self.max_length)):
            if value < 1:
                raise WherefromError(f"{flag} must be at least 1, got {value}.")
        check_numbers(self)
        if not self.learning_rate > 0 or not 0 <= self.warmup_fraction < 1 or not self.lora_alpha > 0:
            raise WherefromError("--learning-rate and --lora-alpha must be above 0 and --warmup-fraction in [0, 1); "
                                 f"got {self.learning_rate:g}, {self.lora_alpha:g} and {self.warmup_fraction:g}.")
        if not [t for t in self.lora_targets.split(",") if t.strip()]:
            raise WherefromError("--lora-targets names no layer; give e.g. gate_proj,up_proj,down_proj.")

    @property
    def training(self) -> TrainingConfig:
        return TrainingConfig(epochs=self.epochs, batch_size=self.batch_size, learning_rate=self.learning_rate,
                              warmup_fraction=self.warmup_fraction, weight_decay=0.0)


@dataclass(frozen=True)
class FinetuneRecipe:
    """Fine-tuning of a local pretrained model folder ``base`` (float32) with LoRA or on every weight."""

    base: Path
    options: FinetuneOptions

    def describe(self) -> dict[str, Any]:
        return {"recipe": self.options.recipe, "base": str(self.base), "options": asdict(self.options)}

    def tokenizer(self) -> Any:
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(self.base)

    def steps(self, n_sequences: int) -> int:
        return _steps(n_sequences, self.options.training)

    def train(self, sequences: list[tuple[int, ...]], seed: int, epochs: int | None = None,
              after_epoch: EpochHook | None = None) -> tuple[nn.Module, TrainingReport]:
        import torch
        from transformers import AutoModelForCausalLM

        from wherefrom.synthetic.training import train_model

        torch.manual_seed(seed)  # the adapters' initialisation
        model = AutoModelForCausalLM.from_pretrained(self.base, dtype=torch.float32)
        if self.options.recipe == "lora":
            from peft import LoraConfig, get_peft_model

            targets = [t.strip() for t in self.options.lora_targets.split(",") if t.strip()]
            config = LoraConfig(r=self.options.lora_rank, lora_alpha=self.options.lora_alpha, lora_dropout=0.0,
                                target_modules=targets, bias="none", task_type="CAUSAL_LM")
            try:
                model = get_peft_model(model, config)
            except ValueError as exc:  # peft's words for targets the model does not have
                raise WherefromError(f"--lora-targets {self.options.lora_targets}: {exc}") from None
        training = self.options.training if epochs is None else replace(self.options.training, epochs=epochs)
        pad = self.tokenizer().pad_token_id
        pad = model.config.eos_token_id if pad is None else pad  # labels ignore the padding; any id will do
        return model, train_model(model, sequences, training, int(pad or 0), seed, quiet=True,
                                  after_epoch=after_epoch)

    def save(self, model: nn.Module, folder: Path) -> None:
        model.save_pretrained(folder)  # a peft model writes only its adapter, naming the base folder
        if self.options.recipe == "full":
            self.tokenizer().save_pretrained(folder)  # `wherefrom fit` reads the explained model's tokenizer

    def load(self, folder: Path) -> nn.Module:
        import torch
        from transformers import AutoModelForCausalLM

        model = AutoModelForCausalLM.from_pretrained(self.base if self.options.recipe == "lora" else folder,
                                                     dtype=torch.float32)
        if self.options.recipe == "lora":
            from peft import PeftModel

            model = PeftModel.from_pretrained(model, folder)
        return model.eval()
