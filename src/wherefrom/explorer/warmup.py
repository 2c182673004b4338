"""What the first question would otherwise pay for, done once the session is ready: numba loading (or compiling)
the gradient index's bit-plane kernel, and one contraction over the whole index (its rows read from disk, the
contraction's threads started). It runs no model, so a question may be answered beside it.

Without it, the first answer on the demo (2 cores) spent 0.9-1.0 s ranking, later ones 0.05-0.1 s.
"""

from __future__ import annotations

import torch

from wherefrom.index import GradientIndex


def warm_up(index: GradientIndex | None) -> None:
    """Contract one query with every row of ``index`` (None: nothing to do), as a question will."""
    if index is not None:
        index.contract(torch.ones(1, index.values))
