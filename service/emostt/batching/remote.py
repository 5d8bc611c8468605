"""A front-end process's ``BatchService``: its sessions' utterances go to the model process,
which batches them with every other front end's (host.py; docs/engine.md, "Front-end processes").

Concurrency rules: ``submit`` runs on the event loop; outcomes and status messages arrive on
the channel's reader thread and reach the loop with ``call_soon_threadsafe``. Load and
readiness are the model process's, from its latest status message (sent every 20 ms);
open sessions are summed over all front ends from shared memory (slots.py), so admission
counts the whole server's sessions without waiting for a status message.

If the model process goes away, every utterance in flight ends with a retryable
``internal_error``, liveness fails, and ``on_lost`` is called (the front end then drains and
exits: a front end without its model process has nothing to serve).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import threading
from collections.abc import Callable
from multiprocessing.connection import Connection

from emostt.batching.batcher import BatcherFullError, BatcherStoppedError
from emostt.batching.capacity import session_refusal
from emostt.batching.channel import Channel
from emostt.batching.slots import FrontendSlots
from emostt.batching.wire import (
    JobMessage,
    OutcomeMessage,
    Refused,
    StatusMessage,
    decode,
    encode_cancel,
    encode_job,
)
from emostt.inference.engine import ModelInfo, TranscriptionRequest
from emostt.policy.outcome import Failed, Outcome
from emostt.supervision import fail_threadsafe, resolve_threadsafe
from emostt.vocabulary.labels import JobKind

log = logging.getLogger(__name__)

MODEL_PROCESS_GONE = "the model process exited"

_Waiter = tuple[asyncio.AbstractEventLoop, "asyncio.Future[Outcome]"]


class RemoteBatcher:
    def __init__(
        self,
        conn: Connection,
        index: int,
        slots: FrontendSlots,
        on_lost: Callable[[], None] = lambda: None,
    ) -> None:
        self._index = index
        self._slots = slots
        self._on_lost = on_lost
        self._channel = Channel(conn, f"emostt-frontend-{index}-link", self._received, self._closed)
        self._ids = itertools.count()
        self._pending: dict[int, _Waiter] = {}
        self._lock = threading.Lock()
        self._status: StatusMessage | None = None
        self._lost: str | None = None
        self._stopping = False

    def start(self) -> None:
        self._channel.start()

    def stop(self, timeout: float = 30.0) -> None:
        self._stopping = True
        self._channel.close(min(timeout, 5.0))

    @property
    def ready(self) -> bool:
        return self._lost is None and self._status is not None and self._status.ready

    @property
    def model(self) -> ModelInfo | None:
        return self._status.model if self._status is not None else None

    @property
    def depth(self) -> int:
        return self._status.depth if self._status is not None else 0

    @property
    def partial_interval_scale(self) -> float:
        return self._status.partial_interval_scale if self._status is not None else 1.0

    def failure(self) -> str | None:
        if self._lost is not None:
            return self._lost
        return self._status.failure if self._status is not None else None

    def set_sessions(self, sessions: int) -> None:
        self._slots.set_sessions(self._index, sessions)

    def open_sessions(self) -> int:
        return self._slots.total_sessions()

    def capacity_sessions(self) -> float | None:
        return self._status.capacity_sessions if self._status is not None else None

    def admission(self) -> str | None:
        return session_refusal(self.open_sessions(), self.capacity_sessions(), self.overloaded())

    def overloaded(self) -> bool:
        return self._status is not None and self._status.overloaded

    def record_speech(self, audio_s: float) -> None:
        self._slots.add_speech(self._index, audio_s)

    async def submit(self, request: TranscriptionRequest, *, is_final: bool, session_id: str = "") -> Outcome:
        return await self._submit(request, "final" if is_final else "partial", session_id)

    async def submit_file_segment(self, request: TranscriptionRequest, *, request_id: str) -> Outcome:
        return await self._submit(request, "file", request_id)

    async def _submit(self, request: TranscriptionRequest, kind: JobKind, session_id: str) -> Outcome:
        if self._lost is not None:
            raise BatcherStoppedError("the server is shutting down")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Outcome] = loop.create_future()
        job_id = next(self._ids)
        with self._lock:
            self._pending[job_id] = (loop, future)
        future.add_done_callback(lambda f: self._done(job_id, f))
        self._channel.send(encode_job(JobMessage(job_id, kind, session_id, request)))
        return await future

    def _done(self, job_id: int, future: asyncio.Future[Outcome]) -> None:
        """On the loop: a waiter that gave up (its session went away) costs no compute."""
        if future.cancelled():
            with self._lock:
                waiting = self._pending.pop(job_id, None) is not None
            if waiting:
                self._channel.send(encode_cancel(job_id))

    def _received(self, data: bytes) -> None:
        message = decode(data)
        if isinstance(message, StatusMessage):
            self._status = message
        elif isinstance(message, OutcomeMessage):
            with self._lock:
                waiter = self._pending.pop(message.job_id, None)
            if waiter is None:
                return  # cancelled meanwhile
            loop, future = waiter
            outcome = message.outcome
            if isinstance(outcome, Refused):
                error = BatcherFullError if outcome.code == "overloaded" else BatcherStoppedError
                fail_threadsafe(loop, future, error(outcome.message))
            else:
                resolve_threadsafe(loop, future, outcome)
        else:
            raise ValueError(f"a front end does not take {type(message).__name__}")

    def _closed(self) -> None:
        self._lost = MODEL_PROCESS_GONE
        with self._lock:
            waiters, self._pending = list(self._pending.values()), {}
        if waiters:
            log.error("model process gone; failing %d utterances in flight", len(waiters))
        failed = Failed("internal_error", "the server lost its model process; reconnect", True)
        for loop, future in waiters:
            resolve_threadsafe(loop, future, failed)
        if not self._stopping:
            self._on_lost()
