"""`--budget`: how many values of each sequence's gradient the index stores, and in which type.

A row of the index is its values plus one float32 scale, so a row of D sketch buckets, one bit each, costs D/8 + 4
bytes and a row of D float16 kept entries 2·D + 4. A budget in bytes buys the most values that fit (for a sketch,
the most multiples of 512 buckets); 'full' (or a budget that holds every entry in float32) keeps every entry in
float32, which makes the index's scores full EK-FAC's.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from wherefrom.errors import WherefromError

SCALE_BYTES = 4  # the float32 scale stored with every row
SKETCH_STEP = 512  # a sketch's row holds a multiple of this many buckets: 64 bytes, and whole blocks of the host's
# int8 kernel once unpacked (see store.py)
BITS = "bits"  # the row type of a sketch: one bit per bucket, packed 8 to a byte
FULL = "full"
_UNITS = {"B": 1, "KB": 1000, "MB": 1000**2, "GB": 1000**3, "KIB": 1024, "MIB": 1024**2, "GIB": 1024**3}
_BUDGET = re.compile(r"(\d+(?:\.\d+)?)\s*([KMG]I?B|B)?", re.IGNORECASE)


@dataclass(frozen=True)
class RowLayout:
    """How one sequence is stored: ``values`` numbers of ``dtype`` and a float32 scale."""

    values: int
    dtype: str  # "bits" (sketch buckets), "float16" (kept entries) or "float32" (every entry)

    @property
    def bytes_per_sequence(self) -> int:
        return self.stored_columns * np.dtype(self.storage_dtype).itemsize + SCALE_BYTES

    @property
    def storage_dtype(self) -> str:
        """The numpy type of gradients.npy."""
        return "uint8" if self.dtype == BITS else self.dtype

    @property
    def stored_columns(self) -> int:
        """Columns of gradients.npy (a sketch's bits are packed 8 to a byte)."""
        return self.values // 8 if self.dtype == BITS else self.values


def check_budget(budget: str, compression: str = "sketch") -> None:
    """Refuse, before any work, a budget that no model could use: not a size, or too small for ``compression``."""
    row_layout(budget, 2 ** 62, compression)  # what remains to check depends on the model's number of entries


def row_layout(budget: str, total_entries: int, compression: str = "sketch") -> RowLayout:
    """The row that ``budget`` buys with ``compression`` ('sketch': one-bit buckets, 'entries': float16 kept entries)
    when the model's tracked layers have ``total_entries`` entries in all."""
    text = budget.strip()
    if text.lower() == FULL:
        return RowLayout(total_entries, "float32")
    match = _BUDGET.fullmatch(text)
    if match is None:
        raise WherefromError(f"--budget {budget!r} is not a size: give bytes per sequence ('64KB', '1.5MB', "
                             "'65536B'), a number of values ('32768'), or 'full'.")
    number, unit = float(match.group(1)), match.group(2)
    dtype = BITS if compression == "sketch" else "float16"
    if unit is None:
        if number != int(number) or number < 1:
            raise WherefromError(f"--budget {budget!r}: a number of values must be a whole number of at least 1.")
        values = int(number)
    else:
        budget_bytes = int(number * _UNITS[unit.upper()])
        if total_entries * 4 + SCALE_BYTES <= budget_bytes:
            return RowLayout(total_entries, "float32")  # everything fits at full precision
        values = (budget_bytes - SCALE_BYTES) * 8 if dtype == BITS else (budget_bytes - SCALE_BYTES) // 2
    if dtype == "float16":
        if values < 1:
            raise WherefromError(f"--budget {budget!r} is {budget_bytes} bytes: a sequence needs at least "
                                 f"{SCALE_BYTES + 2} (one float16 value and its float32 scale).")
        return RowLayout(min(values, total_entries), dtype)
    if values < SKETCH_STEP:
        raise WherefromError(f"--budget {budget!r} holds fewer than the {SKETCH_STEP} buckets a sketch needs at least "
                             f"({SKETCH_STEP // 8 + SCALE_BYTES} bytes); give a larger budget or --compression entries.")
    return RowLayout(values - values % SKETCH_STEP, dtype)
