"""The process-wide batcher: one model thread serves the utterances of every session.

Concurrency rules: sessions call ``submit`` from the event loop; only the model thread
touches the engines (through ``ResilientRunner``). Results go back to the loop with
``call_soon_threadsafe``. The waiting list is bounded; a full list is ``BatcherFullError``.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from dataclasses import dataclass, field

from emostt.batching.collate import Waiting, pick_batch
from emostt.errors import EmosttError
from emostt.inference.engine import TranscriptionRequest
from emostt.observability import metrics
from emostt.policy.retry import Failed, Outcome, ResilientRunner

log = logging.getLogger(__name__)


class BatcherFullError(EmosttError):
    code = "overloaded"
    retryable = True


class BatcherStoppedError(EmosttError):
    code = "shutting_down"
    retryable = True


@dataclass(frozen=True)
class BatcherConfig:
    max_batch_size: int = 16
    max_padded_seconds: float = 160.0
    max_waiting: int = 256


@dataclass
class _Job:
    request: TranscriptionRequest
    is_final: bool
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[Outcome]
    enqueued: float = field(default_factory=time.perf_counter)


class Batcher:
    def __init__(self, runner: ResilientRunner, config: BatcherConfig | None = None) -> None:
        self.runner = runner
        self.config = config or BatcherConfig()
        self._waiting: list[_Job] = []
        self._cond = threading.Condition()
        self._stopping = False
        self._thread = threading.Thread(target=self._loop, name="emostt-model", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Finish the waiting jobs, then stop the model thread."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        self._thread.join(timeout)

    @property
    def depth(self) -> int:
        return len(self._waiting)

    async def submit(self, request: TranscriptionRequest, *, is_final: bool) -> Outcome:
        loop = asyncio.get_running_loop()
        job = _Job(request, is_final, loop, loop.create_future())
        with self._cond:
            if self._stopping:
                raise BatcherStoppedError("the server is shutting down")
            if len(self._waiting) >= self.config.max_waiting:
                raise BatcherFullError(f"{len(self._waiting)} utterances already waiting; try again later")
            self._waiting.append(job)
            metrics.QUEUE_DEPTH.set(len(self._waiting))
            self._cond.notify()
        return await job.future

    def _take_batch(self) -> list[_Job] | None:
        with self._cond:
            while not self._waiting:
                if self._stopping:
                    return None
                self._cond.wait()
            # Cancelled jobs (their session went away) are dropped before they cost compute.
            self._waiting = [j for j in self._waiting if not j.future.cancelled()]
            waiting = [Waiting(j, j.is_final, len(j.request.audio)) for j in self._waiting]
            chosen = set(
                pick_batch(waiting, self.config.max_batch_size, int(self.config.max_padded_seconds * 16_000))
            )
            batch = [j for i, j in enumerate(self._waiting) if i in chosen]
            self._waiting = [j for i, j in enumerate(self._waiting) if i not in chosen]
            metrics.QUEUE_DEPTH.set(len(self._waiting))
            return batch

    def _loop(self) -> None:
        while (batch := self._take_batch()) is not None:
            if not batch:
                continue
            started = time.perf_counter()
            for job in batch:
                metrics.QUEUE_WAIT_SECONDS.labels("final" if job.is_final else "partial").observe(
                    started - job.enqueued
                )
            try:
                outcomes = self.runner.run([j.request for j in batch])
            except Exception as exc:  # the runner maps engine errors; this is a bug guard
                log.exception("batch failed outside the retry policy")
                outcomes = [Failed("internal_error", f"{type(exc).__name__}: {exc}", True)] * len(batch)
            metrics.BATCH_INFERENCE_SECONDS.observe(time.perf_counter() - started)
            metrics.BATCH_SIZE.observe(len(batch))
            for job, outcome in zip(batch, outcomes, strict=True):
                job.loop.call_soon_threadsafe(_resolve, job.future, outcome)


def _resolve(future: asyncio.Future[Outcome], outcome: Outcome) -> None:
    if not future.done():
        future.set_result(outcome)
