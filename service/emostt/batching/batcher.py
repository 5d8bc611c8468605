"""The process-wide batcher: model worker threads serve the utterances of every session.

Concurrency rules: sessions call ``submit`` from the event loop; only the model workers
touch the engines (through ``ResilientRunner``), each running one batch at a time; several
workers run independent batches side by side (on CPU, one per core). Results go back to the loop with
``call_soon_threadsafe``. The waiting list is bounded; a full list is ``BatcherFullError``.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from emostt.batching.collate import Waiting, pick_batch
from emostt.errors import EmosttError
from emostt.inference.engine import TranscriptionRequest
from emostt.observability import metrics
from emostt.policy.retry import Failed, Outcome, ResilientRunner

log = logging.getLogger(__name__)


WorkerRole = Literal["any", "final", "partial"]


class BatcherFullError(EmosttError):
    code = "overloaded"
    retryable = True


class BatcherStoppedError(EmosttError):
    code = "shutting_down"
    retryable = True


@dataclass(frozen=True)
class BatcherConfig:
    # Workers that run finals (and partials too, when there are no partial workers).
    workers: int = 1
    # Workers that run partials only; their threads may run at a lower OS priority (on CPU,
    # finals then take the cores first and partial cadence is what degrades under load).
    partial_workers: int = 0
    max_batch_size: int = 16
    max_padded_seconds: float = 160.0
    # Partial batches stay short so their worker is soon free for the next final.
    max_partial_padded_seconds: float = 8.0
    max_waiting: int = 256
    # While the model is busy, wait this long for more utterances to share a batch (never when idle).
    max_wait_s: float = 0.005
    # A partial still waiting after this long is dropped: a fresher one is coming anyway.
    partial_deadline_s: float = 1.0
    # Finals waiting longer than this (smoothed) mean overload: partials slow down, new sessions get 1013.
    overload_wait_s: float = 0.3


@dataclass
class _Job:
    request: TranscriptionRequest
    is_final: bool
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[Outcome]
    enqueued: float = field(default_factory=time.perf_counter)


class Batcher:
    def __init__(
        self,
        runner: ResilientRunner,
        config: BatcherConfig | None = None,
        worker_init: Callable[[WorkerRole], None] | None = None,
    ) -> None:
        self.runner = runner
        self.config = config or BatcherConfig()
        self._worker_init = worker_init
        self._waiting: list[_Job] = []
        self._cond = threading.Condition()
        self._stopping = False
        self._running: dict[WorkerRole, int] = {"any": 0, "final": 0, "partial": 0}
        self._running_partials = 0  # batches of partials running, on any worker
        self._last_batch_end = 0.0
        self._final_wait_ewma = 0.0
        main_role: WorkerRole = "final" if self.config.partial_workers > 0 else "any"
        self._roles: list[WorkerRole] = [main_role] * max(self.config.workers, 1)
        self._roles += ["partial"] * self.config.partial_workers
        self._threads = [
            threading.Thread(target=self._loop, args=(role,), name=f"emostt-model-{i}-{role}", daemon=True)
            for i, role in enumerate(self._roles)
        ]

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Finish the waiting jobs, then stop the model workers."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(deadline - time.monotonic(), 0.0))

    @property
    def depth(self) -> int:
        return len(self._waiting)

    @property
    def overloaded(self) -> bool:
        """New sessions should be refused: finals wait too long or the waiting list is nearly full."""
        return (
            self._final_wait_ewma > self.config.overload_wait_s
            or len(self._waiting) >= 0.8 * self.config.max_waiting
        )

    @property
    def partial_interval_scale(self) -> float:
        """1.0 when finals flow freely, up to 4.0 as they queue: partial cadence degrades first."""
        return min(max(self._final_wait_ewma / (self.config.overload_wait_s / 4), 1.0), 4.0)

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
            self._cond.notify_all()  # workers differ in what they take: let each look
        return await job.future

    def _takes(self, role: WorkerRole) -> tuple[bool, bool]:
        """(finals, partials) a worker of this role may take now."""
        if role == "any":
            # One shared worker is always kept off partials, so a final never waits behind
            # partial batches on every worker.
            return True, self._running_partials < max(self._roles.count("any") - 1, 1)
        return role == "final", role == "partial"

    def _has_runnable(self, role: WorkerRole) -> bool:
        finals, partials = self._takes(role)
        return any(finals if j.is_final else partials for j in self._waiting)

    def _fair_share(self, role: WorkerRole, runnable: int) -> int:
        """Batch size cap that leaves work for idle workers of the same role: on CPU, two half
        batches on two cores finish sooner than one full batch on one core."""
        idle_others = self._roles.count(role) - self._running[role] - 1
        if idle_others <= 0:
            return self.config.max_batch_size
        return max(min(self.config.max_batch_size, -(-runnable // (idle_others + 1))), 1)

    def _take_batch(self, role: WorkerRole) -> list[_Job] | None:
        cfg = self.config
        with self._cond:
            while not self._has_runnable(role):
                if self._stopping and not self._waiting:
                    return None
                self._cond.wait(cfg.partial_deadline_s if self._waiting else None)
                self._shed_stale_partials()
            busy = sum(self._running.values()) > 0 or time.perf_counter() - self._last_batch_end < 0.05
            if busy and len(self._waiting) < cfg.max_batch_size:
                # Under load a few milliseconds buy a fuller batch; an idle server answers at once.
                self._cond.wait(cfg.max_wait_s)
            self._shed_stale_partials()
            # Cancelled jobs (their session went away) are dropped before they cost compute.
            self._waiting = [j for j in self._waiting if not j.future.cancelled()]
            finals, partials = self._takes(role)
            eligible = [j for j in self._waiting if (finals if j.is_final else partials)]
            waiting = [Waiting(j, j.is_final, len(j.request.audio)) for j in eligible]
            runnable = sum(w.is_final for w in waiting) or len(waiting)
            chosen = pick_batch(
                waiting,
                self._fair_share(role, runnable),
                int(cfg.max_padded_seconds * 16_000),
                max_partial_padded_samples=int(cfg.max_partial_padded_seconds * 16_000),
            )
            batch = [eligible[i] for i in chosen]
            taken = {id(j) for j in batch}
            self._waiting = [j for j in self._waiting if id(j) not in taken]
            metrics.QUEUE_DEPTH.set(len(self._waiting))
            if batch:
                self._running[role] += 1
                self._running_partials += not batch[0].is_final
            return batch

    def _shed_stale_partials(self) -> None:
        now = time.perf_counter()
        keep = []
        for job in self._waiting:
            if not job.is_final and now - job.enqueued > self.config.partial_deadline_s:
                job.loop.call_soon_threadsafe(
                    _resolve, job.future, Failed("partial_shed", "partial dropped", True)
                )
            else:
                keep.append(job)
        self._waiting = keep

    def _loop(self, role: WorkerRole) -> None:
        if self._worker_init is not None:
            self._worker_init(role)
        while (batch := self._take_batch(role)) is not None:
            if batch:
                try:
                    self._run(batch)
                finally:
                    with self._cond:
                        self._running[role] -= 1
                        self._running_partials -= not batch[0].is_final
                        self._last_batch_end = time.perf_counter()
                        self._cond.notify_all()  # a held-back partial may run now

    def _run(self, batch: list[_Job]) -> None:
        started = time.perf_counter()
        for job in batch:
            waited = started - job.enqueued
            metrics.QUEUE_WAIT_SECONDS.labels("final" if job.is_final else "partial").observe(waited)
            if job.is_final:
                self._final_wait_ewma = 0.8 * self._final_wait_ewma + 0.2 * waited
        try:
            outcomes = self.runner.run([j.request for j in batch])
        except Exception as exc:  # the runner maps engine errors; this is a bug guard
            log.exception("batch failed outside the retry policy")
            outcomes = [Failed("internal_error", f"{type(exc).__name__}: {exc}", True)] * len(batch)
        kind = "final" if batch[0].is_final else "partial"
        metrics.BATCH_INFERENCE_SECONDS.labels(kind).observe(time.perf_counter() - started)
        metrics.BATCH_SIZE.observe(len(batch))
        for job, outcome in zip(batch, outcomes, strict=True):
            job.loop.call_soon_threadsafe(_resolve, job.future, outcome)


def _resolve(future: asyncio.Future[Outcome], outcome: Outcome) -> None:
    if not future.done():
        future.set_result(outcome)
