"""What the first question would otherwise pay for at its ranking: numba loading (or compiling) the gradient index's
bit-plane kernel, done by contracting a few of the index's rows in a thread of its own as the session starts taking
questions (loading.py). It runs no model.

Without it, the first answer on the demo (2 cores) spent 0.9-1.0 s ranking, later ones 0.05-0.1 s. Done before the
session took questions, it held that back by 0.3-0.45 s; in its own thread, a question asked at that very moment
took 1.0-1.1 s instead of 0.7-0.8 s (its model work runs beside the warm-up until its ranking waits for the kernel),
and later ones were as fast (docs/explorer.md). Contracting the whole index (the demo's 1,946 rows) took 0.2 s more
and saved the first question nothing measurable: the rows are memory-mapped and the page cache holds them.
"""

from __future__ import annotations

from dataclasses import replace

import torch

from wherefrom.index import GradientIndex

WARM_ROWS = 2  # the kernel reads rows in pairs


def warm_up(index: GradientIndex | None) -> None:
    """Contract one query with the first rows of ``index`` (None: nothing to do), as a question will."""
    if index is not None:
        head = replace(index, gradients=index.gradients[:WARM_ROWS], scales=index.scales[:WARM_ROWS])
        head.contract(torch.ones(1, head.values))
