"""Supervised background threads: a crash is logged, counted and restarted; repeated crashes
mark the thread failed, which fails liveness (``/healthz``) so the orchestrator restarts the pod.

The body is expected to loop until its owner asks it to stop and then return; an exception
escaping it is a bug. Whoever owns the thread's work (the batcher's jobs, the VAD's requests)
fails the work the body had in hand before the exception escapes, so no caller waits forever.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Generic, TypeVar

from emostt.observability import metrics

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")


class SupervisedThread:
    def __init__(
        self,
        name: str,
        kind: str,
        body: Callable[[], None],
        *,
        max_restarts: int = 5,
        window_s: float = 60.0,
        backoff_s: float = 0.1,
    ) -> None:
        self.name = name
        self._kind = kind  # metric label: one value per kind of thread, not per thread
        self._body = body
        self._max_restarts = max_restarts
        self._window_s = window_s
        self._backoff_s = backoff_s
        self._crashes: deque[float] = deque()
        self._stop = threading.Event()
        self.failed: str | None = None  # why it gave up; liveness fails while set
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """No more restarts; the body itself is stopped by its owner."""
        self._stop.set()

    def join(self, timeout: float | None = None) -> None:
        self._thread.join(timeout)

    def is_alive(self) -> bool:
        return self._thread.is_alive()

    def _run(self) -> None:
        while True:
            try:
                self._body()
                return
            except Exception as exc:
                now = time.monotonic()
                self._crashes.append(now)
                while self._crashes and now - self._crashes[0] > self._window_s:
                    self._crashes.popleft()
                metrics.THREAD_CRASHES.labels(self._kind).inc()
                log.exception("thread %s crashed (%s); restarting", self.name, type(exc).__name__)
                if len(self._crashes) > self._max_restarts:
                    self.failed = (
                        f"{self.name} crashed {len(self._crashes)} times in {self._window_s:.0f} s: "
                        f"{type(exc).__name__}"
                    )
                    log.critical("giving up on thread %s; liveness fails", self.name)
                    return
                if self._stop.wait(self._backoff_s * 2 ** (len(self._crashes) - 1)):
                    return


class RequestWorker(Generic[R]):
    """One supervised thread answering requests that event-loop callers queue (the VAD's and the
    turn model's batchers): the queue, its condition and the thread's start and stop. The
    subclass's ``_loop`` takes ``_pending`` under ``_cond`` and returns once ``_stopping`` is set
    and nothing is pending."""

    def __init__(self, name: str, kind: str) -> None:
        self._pending: list[R] = []
        self._cond = threading.Condition()
        self._stopping = False
        self._thread = SupervisedThread(name, kind, self._loop)

    def _loop(self) -> None:
        raise NotImplementedError

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """No more restarts; what is pending is answered, then the thread ends."""
        self._thread.stop()
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        self._thread.join(10)

    @property
    def failed(self) -> str | None:
        """Why the thread gave up (liveness fails while set), or None."""
        return self._thread.failed


def resolve_threadsafe(loop: asyncio.AbstractEventLoop, future: asyncio.Future[T], value: T) -> None:
    """Hand ``value`` to ``future`` on its loop from another thread. A closed loop (its caller
    is gone, e.g. a test's or a shut-down server's) has nobody left to tell: drop it."""
    with contextlib.suppress(RuntimeError):  # raised when the loop is closed
        loop.call_soon_threadsafe(_set_result, future, value)


def fail_threadsafe(loop: asyncio.AbstractEventLoop, future: asyncio.Future[T], error: BaseException) -> None:
    with contextlib.suppress(RuntimeError):
        loop.call_soon_threadsafe(_set_exception, future, error)


def _set_result(future: asyncio.Future[T], value: T) -> None:
    if not future.done():
        future.set_result(value)


def _set_exception(future: asyncio.Future[T], error: BaseException) -> None:
    if not future.done():
        future.set_exception(error)
