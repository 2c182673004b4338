"""Questions as jobs, answered one after the other by a single worker thread, each with progress events and a
cancel flag that the work checks between its steps."""

from __future__ import annotations

import itertools
import queue
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from wherefrom.errors import WherefromError

Status = Literal["queued", "running", "done", "failed", "cancelled"]
KEPT_JOBS = 64  # finished jobs kept for polling and report downloads; older ones are forgotten


class JobCancelled(Exception):
    """Raised inside a job's work at its next check once someone asked to cancel it."""


@dataclass
class Job:
    """One question: its status, the events it reported so far, and its result once done."""

    id: str
    work: Callable[[Job], Any]
    status: Status = "queued"
    events: list[dict[str, Any]] = field(default_factory=list)
    result: Any = None
    error: str | None = None
    created: float = field(default_factory=time.monotonic)
    cancel_requested: threading.Event = field(default_factory=threading.Event)
    finished: threading.Event = field(default_factory=threading.Event)

    def emit(self, kind: str, **data: Any) -> None:
        """Record a progress event (read by pollers with ``events[since:]``), then check for cancellation."""
        self.events.append({"kind": kind, **data})
        self.check()

    def check(self) -> None:
        """Stop the work here if a cancel was requested."""
        if self.cancel_requested.is_set():
            raise JobCancelled


class JobQueue:
    """A FIFO of jobs run by one worker thread: two people asking at once are answered in turn."""

    def __init__(self) -> None:
        self._jobs: OrderedDict[str, Job] = OrderedDict()
        self._pending: queue.Queue[Job | None] = queue.Queue()
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self._worker = threading.Thread(target=self._run, name="wherefrom-explorer-worker", daemon=True)
        self._worker.start()

    def submit(self, work: Callable[[Job], Any]) -> Job:
        """Queue ``work`` (called with its Job) and return the job at once."""
        with self._lock:
            job = Job(id=f"q{next(self._ids)}", work=work)
            self._jobs[job.id] = job
            while len(self._jobs) > KEPT_JOBS:
                oldest = next(iter(self._jobs.values()))
                if not oldest.finished.is_set():
                    break
                self._jobs.popitem(last=False)
        self._pending.put(job)
        return job

    def get(self, job_id: str) -> Job:
        """The job with this id; a KeyError names the problem when there is none."""
        with self._lock:
            job = self._jobs.get(job_id)
        if job is None:
            raise KeyError(f"no question with id {job_id!r}: it never existed or was forgotten "
                           f"(the server keeps the last {KEPT_JOBS}); ask it again.")
        return job

    def position(self, job: Job) -> int:
        """How many jobs run or wait before this one (0 when it is running or finished)."""
        if job.status != "queued":
            return 0
        with self._lock:
            return sum(1 for other in self._jobs.values()
                       if other.created < job.created and other.status in ("queued", "running"))

    def cancel(self, job: Job) -> None:
        """Ask a job to stop; a queued job is dropped before it starts, a running one stops at its next check."""
        job.cancel_requested.set()

    def close(self) -> None:
        """Stop the worker after the job it is running."""
        self._pending.put(None)

    def _run(self) -> None:
        while (job := self._pending.get()) is not None:
            if job.cancel_requested.is_set():
                job.status = "cancelled"
                job.finished.set()
                continue
            job.status = "running"
            try:
                job.result = job.work(job)
                job.status = "done"
            except JobCancelled:
                job.status = "cancelled"
            except WherefromError as error:
                job.error, job.status = str(error), "failed"
            except Exception as error:  # reported to the page as a message, never as a traceback
                job.error, job.status = f"internal error ({type(error).__name__}): {error}", "failed"
            finally:
                job.finished.set()
