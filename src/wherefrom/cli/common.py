"""The Typer app and what every command shares: option helpers, error display, --quiet and --restart."""

from __future__ import annotations

import errno
import os
import signal
import sys
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext

import click
import torch
import typer
from rich.console import Console
from rich.markup import escape

from wherefrom.errors import WherefromError
from wherefrom.fileio import first_line
from wherefrom.options import ExecutionOptions, FitOptions, IndexOptions, ScoreOptions, default_of, help_of
from wherefrom.version import __version__

app = typer.Typer(
    name="wherefrom",
    help="Trace what a language model says back to the training sequences that shaped it "
         "(EK-FAC influence functions, Grosse et al. 2023).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
err = Console(stderr=True)

QUIET = typer.Option(False, "--quiet", "-q", help="No progress bars or summary.")
RESTART = typer.Option(False, "--restart", help="Discard finished shards or results of a different earlier run.")
DRY_RUN = typer.Option(False, "--dry-run", help="Print the estimated memory per stage, time (measured on a small "
                                                 "sample) and output size, and write nothing.")


def fit_opt(name: str, *flags: str) -> object:
    return typer.Option(default_of(FitOptions, name), *flags, help=help_of(FitOptions, name))


def score_opt(name: str, *flags: str) -> object:
    return typer.Option(default_of(ScoreOptions, name), *flags, help=help_of(ScoreOptions, name))


def index_opt(name: str, *flags: str) -> object:
    return typer.Option(default_of(IndexOptions, name), *flags, help=help_of(IndexOptions, name))


def execution_opt(name: str) -> object:
    return typer.Option(default_of(ExecutionOptions, name), f"--{name}", help=help_of(ExecutionOptions, name))


DEVICE = execution_opt("device")
DTYPE = execution_opt("dtype")
FACTORS = execution_opt("factors")


def _version(value: bool) -> None:
    if value:
        typer.echo(f"wherefrom {__version__}")
        raise typer.Exit()


@app.callback()
def main(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                      help="Print the version and exit."),
         threads: int | None = typer.Option(
             None, "--threads", envvar="WHEREFROM_THREADS", show_envvar=True,
             help="CPU threads for torch's operations (default: torch's, one per core). On a shared or loaded "
                  "machine, fewer avoid oversubscribing the cores. Give it before the command: "
                  "`wherefrom --threads 4 fit ...`.")) -> None:
    """wherefrom: influence of training sequences on a language model's completions."""
    from transformers.utils import logging as hf_logging

    from wherefrom.allocator import return_large_blocks_to_os

    if threads is not None:
        if threads < 1:
            _fail(f"--threads (or WHEREFROM_THREADS) must be at least 1, got {threads}.", 2)
        torch.set_num_threads(threads)
    return_large_blocks_to_os()
    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()


def choice(value: str, allowed: tuple[str, ...], flag: str) -> str:
    if value not in allowed:
        raise WherefromError(f"{flag} {value!r} is not one of: {', '.join(allowed)}.")
    return value


def print_dry_run(estimate: object, quiet: bool) -> None:
    """Run ``estimate()`` (loads the model and times a sample) and print the cost table on stdout."""
    from wherefrom.outputs.costs_table import print_costs

    with nullcontext() if quiet else err.status("estimating costs: loading the model, timing a sample of sequences"):
        result = estimate()
    print_costs(result)


class Terminated(KeyboardInterrupt):
    """SIGTERM (``kill``, a cluster's scheduler ending a job), raised where the command was, like Ctrl-C's
    KeyboardInterrupt: whatever was finished is kept the same way."""


def run_action(action: object) -> None:
    """Run a command's work; a problem with the input or the files becomes one line on stderr (exit 2), never a
    traceback (set WHEREFROM_TRACEBACK=1 to see one for an unexpected error). SIGTERM stops it as Ctrl-C does."""
    try:
        with _sigterm_interrupts(), _quiet_library_warnings():
            action()
    except WherefromError as exc:
        _fail(str(exc), 2)
    except OSError as exc:  # the file system refused: a full disk, a missing permission, a path of the wrong kind
        where = f" ({exc.filename})" if exc.filename else ""
        _fail(f"{exc.strerror or exc}{where}; {_NOTHING_LOST}", 2)
    except (click.exceptions.Exit, click.ClickException, click.Abort):
        raise
    except Terminated:
        _fail("terminated (SIGTERM); finished shards are kept: run the same command again to resume.", 143)
    except KeyboardInterrupt:
        _fail("interrupted; finished shards are kept: run the same command again to resume.", 130)
    except Exception as exc:
        if no_space_left(exc):  # a full disk met inside a library's writer (safetensors raises its own type)
            _fail(f"{os.strerror(errno.ENOSPC)}; {_NOTHING_LOST}", 2)
        if os.environ.get("WHEREFROM_TRACEBACK"):
            raise
        _fail(f"unexpected {type(exc).__name__}: {first_line(exc)} (a wherefrom bug: please report it with "
              "WHEREFROM_TRACEBACK=1 set to show the traceback).", 1)


_NOTHING_LOST = "nothing finished was lost: fix it and run the same command again."
# How libraries that do not raise OSError say ENOSPC: safetensors (Rust) "Error while serializing: I/O error: No
# space left on device (os error 28)", Rust's debug form "StorageFull", and whatever keeps the C library's words.
_NO_SPACE_WORDS = (os.strerror(errno.ENOSPC), "StorageFull", f"(os error {errno.ENOSPC})")


def no_space_left(exc: BaseException) -> bool:
    """Whether ``exc``, or an exception it was raised from, is a full disk (ENOSPC), whatever its type."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno == errno.ENOSPC:
            return True
        if any(words in str(current) for words in _NO_SPACE_WORDS):
            return True
        current = current.__cause__ or current.__context__
    return False


@contextmanager
def _quiet_library_warnings() -> Iterator[None]:
    """While a command runs, FutureWarning and DeprecationWarning (the libraries' notes to developers about their
    own future, which a user of the command line can do nothing about) are not shown, unless warnings were asked
    for (python -W, PYTHONWARNINGS)."""
    with warnings.catch_warnings():
        if not sys.warnoptions:
            warnings.simplefilter("ignore", FutureWarning)
            warnings.simplefilter("ignore", DeprecationWarning)
        yield


@contextmanager
def _sigterm_interrupts() -> Iterator[None]:
    """While the body runs, SIGTERM raises :class:`Terminated` (in the main thread; elsewhere nothing changes)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def terminate(_signum: int, _frame: object) -> None:
        raise Terminated

    previous = signal.signal(signal.SIGTERM, terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _fail(message: str, code: int) -> None:
    err.print("[bold red]error:[/]", escape(message), soft_wrap=True, highlight=False)
    raise typer.Exit(code) from None
