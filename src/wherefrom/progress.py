"""Progress bars for every pass over data (rich, on stderr); ``quiet`` turns them off."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TypeVar

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

T = TypeVar("T")
_console = Console(stderr=True)


def track(items: Iterable[T], total: int, description: str, quiet: bool = False) -> Iterator[T]:
    """Yield ``items`` while showing a progress bar of ``total`` steps (nothing is shown when quiet)."""
    if quiet:
        yield from items
        return
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
               TextColumn("eta"), TimeRemainingColumn())
    with Progress(*columns, console=_console, transient=False) as progress:
        task = progress.add_task(description, total=total)
        for item in items:
            yield item
            progress.advance(task)



def note(message: str, quiet: bool = False) -> None:
    """Print a one-line note on stderr (nothing when quiet)."""
    if not quiet:
        _console.print(f"note: {message}", highlight=False, soft_wrap=True)
