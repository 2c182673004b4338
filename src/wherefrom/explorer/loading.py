"""The explorer's session, opened while the page is already served: `wherefrom serve` starts the web server first
and then opens the session in its main thread; what needs the session waits for it.

The session is opened in the main thread on purpose: with the model loaded in another thread, every answer took
10-20 times the CPU time (measured on the demo, alternated in one run: 0.8-1.6 s against 2.7-22 s).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from importlib import import_module
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from wherefrom.explorer.session import ExplorerSession


class SessionLoader:
    """A session that :meth:`open` opens (in the calling thread); :meth:`get` waits for it from any thread and
    re-raises what opening it raised."""

    def __init__(self) -> None:
        self._session: ExplorerSession | None = None
        self._error: BaseException | None = None
        self._done = threading.Event()

    @classmethod
    def loaded(cls, session: ExplorerSession) -> SessionLoader:
        """A loader whose session is already open."""
        loader = cls()
        loader.open(lambda: session)
        return loader

    def open(self, open_session: Callable[[], ExplorerSession]) -> ExplorerSession:
        """Open the session (the page is served meanwhile), then warm it up (warmup.py) in a thread of its own as it
        starts taking questions; what opening raises is also kept for :meth:`get`."""
        try:
            session = open_session()
            import_module("wherefrom.explorer.answer")  # what answering needs, loaded before the first question
            self._session = session
        except BaseException as error:
            self._error = error
            raise
        finally:
            self._done.set()
        threading.Thread(target=import_module("wherefrom.explorer.warmup").warm_up, args=(session.index,),
                         name="wherefrom-warm-up", daemon=True).start()
        return session

    @property
    def ready(self) -> bool:
        """Whether opening has finished (opened or failed)."""
        return self._done.is_set()

    def get(self, timeout: float | None = None) -> ExplorerSession:
        """The session, waiting up to ``timeout`` seconds (None: as long as it takes) for it to open."""
        if not self._done.wait(timeout):
            raise TimeoutError(f"the explorer's session did not open within {timeout} s")
        if self._error is not None:
            raise self._error
        return self._session
