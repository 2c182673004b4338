"""The explorer's session opened in a background thread, so that `wherefrom serve` shows its page at once while
the model, curvature, corpus and index load and one question is answered to warm them up; what needs the session
waits for it."""

from __future__ import annotations

import threading
from collections.abc import Callable
from importlib import import_module
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from wherefrom.explorer.session import ExplorerSession


class SessionLoader:
    """Opens a session in a daemon thread (and with ``warm_up`` answers a first question, dropped); :meth:`get`
    waits for it and re-raises what opening it raised."""

    def __init__(self, open_session: Callable[[], ExplorerSession],
                 on_failure: Callable[[BaseException], None] = lambda error: None, warm_up: bool = True) -> None:
        self._session: ExplorerSession | None = None
        self._error: BaseException | None = None
        self._done = threading.Event()
        self._on_failure = on_failure
        self._warm_up = warm_up
        threading.Thread(target=self._open, args=(open_session,), name="wherefrom-session", daemon=True).start()

    @classmethod
    def loaded(cls, session: ExplorerSession) -> SessionLoader:
        """A loader whose session is already open."""
        return cls(lambda: session, warm_up=False)

    def _open(self, open_session: Callable[[], ExplorerSession]) -> None:
        try:
            session = open_session()
            answering = import_module("wherefrom.explorer.answer")  # loaded before the first question, not by it
            if self._warm_up:
                answering.warm_up(session)
            self._session = session
        except BaseException as error:  # noqa: BLE001 - handed to whoever waits, and to on_failure
            self._error = error
            self._on_failure(error)
        finally:
            self._done.set()

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
