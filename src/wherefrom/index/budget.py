"""`--budget`: how many values of each sequence's gradient the index stores, and in which float type.

A row of the index is its values plus one float32 scale (the row's largest magnitude), so a row of D float16 values
costs 2·D + 4 bytes. A budget in bytes buys the most values that fit; 'full' keeps every entry in float32, which
makes the index's scores full EK-FAC's.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from wherefrom.errors import WherefromError

SCALE_BYTES = 4  # the float32 scale stored with every row
FULL = "full"
_UNITS = {"B": 1, "KB": 1000, "MB": 1000**2, "GB": 1000**3, "KIB": 1024, "MIB": 1024**2, "GIB": 1024**3}
_BUDGET = re.compile(r"(\d+(?:\.\d+)?)\s*([KMG]I?B|B)?", re.IGNORECASE)


@dataclass(frozen=True)
class RowLayout:
    """How one sequence is stored: ``values`` numbers of ``dtype`` and a float32 scale."""

    values: int
    dtype: str  # "float16" or "float32"

    @property
    def bytes_per_sequence(self) -> int:
        return self.values * np.dtype(self.dtype).itemsize + SCALE_BYTES


def row_layout(budget: str, total_entries: int) -> RowLayout:
    """The row that ``budget`` buys when the model's tracked layers have ``total_entries`` entries in all."""
    text = budget.strip()
    if text.lower() == FULL:
        return RowLayout(total_entries, "float32")
    match = _BUDGET.fullmatch(text)
    if match is None:
        raise WherefromError(f"--budget {budget!r} is not a size: give bytes per sequence ('64KB', '1.5MB', "
                             "'65536B'), a number of values ('32768'), or 'full'.")
    number, unit = float(match.group(1)), match.group(2)
    if unit is None:
        if number != int(number) or number < 1:
            raise WherefromError(f"--budget {budget!r}: a number of values must be a whole number of at least 1.")
        return RowLayout(min(int(number), total_entries), "float16")
    budget_bytes = int(number * _UNITS[unit.upper()])
    values = (budget_bytes - SCALE_BYTES) // 2
    if values < 1:
        raise WherefromError(f"--budget {budget!r} is {budget_bytes} bytes: a sequence needs at least "
                             f"{SCALE_BYTES + 2} (one float16 value and its float32 scale).")
    if total_entries * 4 + SCALE_BYTES <= budget_bytes:
        return RowLayout(total_entries, "float32")  # everything fits at full precision
    return RowLayout(min(values, total_entries), "float16")
