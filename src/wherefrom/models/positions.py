"""How many positions a model reads: --max-length is capped there (a longer sequence would index past its
position embeddings, or run where it was never trained)."""

from __future__ import annotations

from torch import nn

from wherefrom.progress import note

_POSITION_FIELDS = ("max_position_embeddings", "n_positions", "n_ctx", "max_sequence_length", "seq_length")


def max_positions(model: nn.Module) -> int | None:
    """The model's number of positions from its config, or None when it states none."""
    config = getattr(model, "config", None)
    config = getattr(config, "get_text_config", lambda: config)() if config is not None else None
    for name in _POSITION_FIELDS:
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def cap_max_length(model: nn.Module, max_length: int, quiet: bool = False) -> int:
    """``max_length``, or the model's positions when it has fewer (saying so, unless quiet)."""
    limit = max_positions(model)
    if limit is None or max_length <= limit:
        return max_length
    note(f"--max-length {max_length} is more than the model's {limit} positions; using {limit}.", quiet)
    return limit
