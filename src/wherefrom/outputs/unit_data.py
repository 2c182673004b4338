"""The sequences of the "which neurons carry it" panel as compact data for the report's script, which draws a unit's
sequences when its bar is first clicked: the page holds each sequence's text once, not once per unit."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from wherefrom.outputs.tokens import WHITE_TEXT_ABOVE
from wherefrom.outputs.unit_panel import UnitPanel

VALUE_DIGITS = 6  # significant digits of a token's value (its hover text)


def unit_data(panel: UnitPanel, signed: Callable[[float], str]) -> dict[str, Any]:
    """The panel's sequences (once each) and, per bar, its sequences' influence through the unit and token maps.

    ``signed`` formats a score as the report prints it. A sequence seen through a unit is ``[row, its influence
    through the unit (text), 1 if positive else 0]``, followed, when it has a token map, by its tokens' values and
    their colours' opacities in thousandths (None: uncoloured); ``white_above``: the opacity above which a token's
    text is white.
    """
    sequences: dict[str, dict[str, Any]] = {}
    units = []
    for bar in panel.bars:
        through = []
        for seq in bar.sequences:
            shown = sequences.setdefault(str(seq.row), {"id": seq.record_id, "score": signed(seq.score)})
            entry: list[Any] = [seq.row, signed(seq.value), int(seq.value > 0)]
            if seq.tokens is None:
                shown["text"] = seq.text
            else:
                shown["pieces"] = [t.text for t in seq.tokens]
                entry.append([float(f"{t.value:.{VALUE_DIGITS}g}") for t in seq.tokens])
                entry.append([None if t.opacity is None else round(1000 * t.opacity) for t in seq.tokens])
            through.append(entry)
        units.append(through)
    return {"sequences": sequences, "units": units, "white_above": round(1000 * WHITE_TEXT_ABOVE)}
