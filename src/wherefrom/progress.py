"""Progress bars for every pass over data (rich, on stderr); ``quiet`` turns them off."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
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
    with progress_bar(total, description) as bar:
        for item in items:
            yield item
            bar.advance()


class Bar:
    """A progress bar advanced by hand, whose description can change as the work goes (see :func:`progress_bar`)."""

    def __init__(self, progress: Progress | None, task: int | None) -> None:
        self._progress, self._task = progress, task

    def advance(self, steps: int = 1) -> None:
        if self._progress is not None:
            self._progress.advance(self._task, steps)

    def describe(self, description: str) -> None:
        if self._progress is not None:
            self._progress.update(self._task, description=description)

    def note(self, text: str) -> None:
        """A line printed above the bar (kept in logs and piped output, where the bar is drawn only at the end)."""
        if self._progress is not None:
            self._progress.console.print(text, highlight=False)

    def finish(self) -> None:
        """Mark the work done (it may have stopped before ``total`` steps, e.g. a solver that converged early)."""
        if self._progress is not None:
            done = next(task.completed for task in self._progress.tasks if task.id == self._task)
            self._progress.update(self._task, total=done)


@contextmanager
def progress_bar(total: int, description: str, quiet: bool = False) -> Iterator[Bar]:
    """A bar of ``total`` steps on stderr for work that is not one loop; nothing is shown when quiet."""
    if quiet:
        yield Bar(None, None)
        return
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
               TextColumn("eta"), TimeRemainingColumn())
    with Progress(*columns, console=_console, transient=False) as progress:
        yield Bar(progress, progress.add_task(description, total=total))


@contextmanager
def phase(description: str, quiet: bool = False) -> Iterator[None]:
    """One long step that is not a loop (loading, writing), shown as a one-step bar with its elapsed time; nothing
    is shown when quiet."""
    with progress_bar(1, description, quiet) as bar:
        yield
        bar.advance()


def note(message: str, quiet: bool = False) -> None:
    """Print a one-line note on stderr (nothing when quiet)."""
    if not quiet:
        _console.print(f"note: {message}", highlight=False, soft_wrap=True)
