"""Python's cyclic garbage collector, paused while a command starts up.

Starting up imports torch and a model's transformers code and loads the model: about 750,000 objects that live as
long as the process, and almost no garbage (13,000 objects in cycles in a `wherefrom serve` start). Every burst of
allocations sets the collector off, and its full collections walk every object alive, so with it running the
imports of `wherefrom serve` took 4.8 s on 2 cores and with it paused 3.9 s, and a full collection after them
0.3 s (docs/explorer.md). Reference counting frees everything that forms no cycle either way.

A process that keeps what it started with to its end (the command line, the explorer's server) also freezes it
(gc.freeze): later collections skip those objects, so no answer pays for walking them. What was cyclic garbage at
that moment is kept too, once: a few MB.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def collector_paused(freeze: bool = False) -> Iterator[None]:
    """Run the block with the cyclic collector off, then on again; with ``freeze``, everything alive at the end moves
    to the permanent generation first. Where the collector is already off (an outer block paused it, or the caller
    turned it off) the block changes nothing: the outer one decides."""
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        if freeze:
            gc.freeze()
        gc.enable()
