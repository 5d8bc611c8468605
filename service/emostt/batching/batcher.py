"""The process-wide batcher: model worker threads serve the utterances of every session.

Concurrency rules: sessions call ``submit`` from the event loop; only the model workers
touch the engines (through ``ResilientRunner``), each running one batch at a time; several
workers run independent batches side by side (on CPU, one per core). Results go back to the loop with
``call_soon_threadsafe``. The waiting list is bounded; a full list is ``BatcherFullError``.

Workers are supervised: an exception escaping a batch fails that batch's utterances
(``internal_error``), is logged with their session ids, and the worker restarts.

Load: ``capacity`` learns what serving costs (see capacity.py) and decides admission;
``final_wait_s`` is the age of the oldest waiting final or a recent final's wait, decaying
once finals stop waiting, so a past burst never keeps the server refusing.

Priorities: live finals, then partials, then file segments (the REST file endpoint). A batch
holds one kind only. Live work comes first because a person is waiting on each piece of it
(a final now, a partial within ``partial_deadline_s``); a file segment has no deadline of its
own. Where there are partial workers (CPU: at a lower OS priority), file segments run there,
after partials, so files use the cores live finals leave idle; shared ("any") workers take
them after finals and partials, one of several shared workers staying free of partials and
file segments. Final-only workers never take file segments: a long file cannot occupy the
workers live finals need. File batches are not measured for capacity (they yield to live
work, so they do not reduce the sessions the server can admit).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from emostt.batching.capacity import CapacityConfig, CapacityModel, session_refusal
from emostt.batching.collate import DEFAULT_MAX_BATCH_SIZE, DEFAULT_MAX_PADDED_SECONDS, Waiting, pick_batch
from emostt.errors import EmosttError
from emostt.inference.engine import ModelInfo, TranscriptionRequest
from emostt.inference.lone_call import running_alone
from emostt.observability import metrics
from emostt.policy.outcome import Failed, Outcome
from emostt.policy.retry import ResilientRunner
from emostt.supervision import SupervisedThread, resolve_threadsafe
from emostt.vocabulary import SAMPLE_RATE
from emostt.vocabulary.labels import JobKind

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
    max_batch_size: int = DEFAULT_MAX_BATCH_SIZE
    # Batch size x longest utterance, in seconds: a number, or a callable read at every batch
    # (the engine's best cap may change while serving, e.g. when it switches to the ONNX encoder).
    max_padded_seconds: float | Callable[[], float] = DEFAULT_MAX_PADDED_SECONDS
    # Partial batches stay short so their worker is soon free for the next final.
    max_partial_padded_seconds: float = 8.0
    max_waiting: int = 256
    # While the model is busy, wait this long for more utterances to share a batch (never when idle).
    max_wait_s: float = 0.005
    # A partial still waiting after this long is dropped: a fresher one is coming anyway.
    partial_deadline_s: float = 1.0
    # Finals waiting longer than this mean overload: partials slow down, new sessions get 1013.
    overload_wait_s: float = 0.3
    # How fast a recent final's wait stops counting once finals flow freely again.
    wait_halflife_s: float = 0.5
    target_utilization: float = 0.7
    session_demand_prior: float = 1.0
    # A batch runs alone (every core, lone_call.py) only below this expected load: above it another
    # batch often starts during the wide call and the two contend (docs/engine.md, "CPU threads").
    lone_call_max_load: float = 0.1


@dataclass
class _Job:
    request: TranscriptionRequest
    kind: JobKind
    # Called once, from a model worker, with the job's outcome; must not block.
    deliver: Callable[[Outcome], None]
    # True once nobody wants the outcome (the session went away): dropped before it costs compute.
    cancelled: Callable[[], bool]
    session_id: str = ""  # or the file request's id
    enqueued: float = 0.0

    @property
    def is_final(self) -> bool:
        """A live final: what the overload signal and the capacity model measure."""
        return self.kind == "final"


class Batcher:
    def __init__(
        self,
        runner: ResilientRunner,
        config: BatcherConfig | None = None,
        worker_init: Callable[[WorkerRole], None] | None = None,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.runner = runner
        self._clock = clock
        self.config = config or BatcherConfig()
        self._worker_init = worker_init
        self._waiting: list[_Job] = []
        self._cond = threading.Condition()
        self._stopping = False
        self._running: dict[WorkerRole, int] = {"any": 0, "final": 0, "partial": 0}
        self._running_background = 0  # batches of partials or file segments running, on any worker
        self._last_batch_end = 0.0
        self._recent_wait = (0.0, 0.0)  # (a final's wait in seconds, when its batch started)
        # Whether a batch with no other running or waiting may run alone (lone_call.py); the
        # warm-up turns it off while it measures what a worker's batch costs.
        self.lone_calls = True
        main_role: WorkerRole = "final" if self.config.partial_workers > 0 else "any"
        self._roles: list[WorkerRole] = [main_role] * max(self.config.workers, 1)
        self._roles += ["partial"] * self.config.partial_workers
        self.capacity = CapacityModel(
            CapacityConfig(
                workers=self._roles.count(main_role),
                target_utilization=self.config.target_utilization,
                demand_prior=self.config.session_demand_prior,
            )
        )
        self._threads = [
            SupervisedThread(f"emostt-model-{i}-{role}", "model_worker", functools.partial(self._loop, role))
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
            thread.stop()
            thread.join(max(deadline - time.monotonic(), 0.0))

    @property
    def final_workers(self) -> int:
        return self.capacity.config.workers

    @property
    def failed(self) -> str | None:
        """Why a model worker gave up after repeated crashes (liveness fails), else None."""
        return next((t.failed for t in self._threads if t.failed), None)

    @property
    def depth(self) -> int:
        return len(self._waiting)

    @property
    def ready(self) -> bool:
        """Serving (the app reports ready only after its warm-up batches)."""
        return not self._stopping

    @property
    def model(self) -> ModelInfo:
        """The model serving now (its backend changes when the ONNX export is ready)."""
        return self.runner.primary.info

    def failure(self) -> str | None:
        """Why serving cannot recover by itself (a fatal device error, a model worker that keeps
        crashing): liveness fails. None while healthy."""
        return self.runner.fatal_error or self.failed

    def set_sessions(self, sessions: int) -> None:
        """The sessions open now (admission and the capacity model count them)."""
        self.capacity.set_sessions(sessions)

    def open_sessions(self) -> int:
        return self.capacity.sessions

    def capacity_sessions(self) -> float | None:
        return self.capacity.capacity_sessions()

    def max_padded_seconds(self) -> float:
        seconds = self.config.max_padded_seconds
        return seconds() if callable(seconds) else seconds

    def final_wait_s(self) -> float:
        """How long finals wait now: the oldest waiting final's age, or a recent final's wait
        decayed by the time since (so the signal fades within seconds once load ends)."""
        now = self._clock()
        with self._cond:
            oldest = min((j.enqueued for j in self._waiting if j.is_final), default=now)
        waited, at = self._recent_wait
        decayed = waited * 0.5 ** ((now - at) / self.config.wait_halflife_s) if at else 0.0
        return max(now - oldest, decayed)

    def admission(self) -> str | None:
        """Why one more session must be refused now (an error code), or None to admit it."""
        return session_refusal(self.open_sessions(), self.capacity.capacity_sessions(), self.overloaded())

    def overloaded(self) -> bool:
        """Live finals already wait too long, or the waiting list is nearly full: new work
        (a session, a file) would make them later."""
        return self.final_wait_s() > self.config.overload_wait_s or (
            len(self._waiting) >= 0.8 * self.config.max_waiting
        )

    @property
    def partial_interval_scale(self) -> float:
        """1.0 while finals flow freely, up to 4.0 as they start to wait or the open sessions
        approach capacity: partial cadence degrades before finals are late."""
        by_wait = self.final_wait_s() / (self.config.overload_wait_s / 4)
        by_load = 4 * (self.capacity.utilization() - 0.5)  # 1.0 at 75 % of the target, 2.0 at 100 %
        return min(max(by_wait, by_load, 1.0), 4.0)

    def record_speech(self, audio_s: float) -> None:
        """A session received this much speech (it will become final audio): demand, measured."""
        self.capacity.record_demand(audio_s)

    async def submit(self, request: TranscriptionRequest, *, is_final: bool, session_id: str = "") -> Outcome:
        """A live session's final or partial."""
        return await self._submit(request, "final" if is_final else "partial", session_id)

    async def submit_file_segment(self, request: TranscriptionRequest, *, request_id: str) -> Outcome:
        """A segment of an uploaded file: served after live finals and partials (see the module doc).
        Callers keep only a few in flight, so files never crowd the bounded waiting list."""
        return await self._submit(request, "file", request_id)

    async def _submit(self, request: TranscriptionRequest, kind: JobKind, session_id: str) -> Outcome:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Outcome] = loop.create_future()
        deliver = functools.partial(resolve_threadsafe, loop, future)
        self.enqueue(request, kind, session_id, deliver=deliver, cancelled=future.cancelled)
        return await future

    def enqueue(
        self,
        request: TranscriptionRequest,
        kind: JobKind,
        session_id: str,
        *,
        deliver: Callable[[Outcome], None],
        cancelled: Callable[[], bool],
    ) -> None:
        """Queue one utterance from any thread; ``deliver`` gets its outcome on a model worker.
        Raises ``BatcherFullError`` or ``BatcherStoppedError`` instead of queueing."""
        job = _Job(request, kind, deliver, cancelled, session_id, self._clock())
        with self._cond:
            if self._stopping:
                raise BatcherStoppedError("the server is shutting down")
            if len(self._waiting) >= self.config.max_waiting:
                raise BatcherFullError(f"{len(self._waiting)} utterances already waiting; try again later")
            self._waiting.append(job)
            metrics.QUEUE_DEPTH.set(len(self._waiting))
            self._cond.notify_all()  # workers differ in what they take: let each look

    def _takes(self, role: WorkerRole) -> tuple[JobKind, ...]:
        """The kinds a worker of this role may take now, most urgent first."""
        if role == "any":
            # One shared worker is always kept off partials and file segments, so a final never
            # waits behind such batches on every worker.
            if self._running_background < max(self._roles.count("any") - 1, 1):
                return ("final", "partial", "file")
            return ("final",)
        return ("final",) if role == "final" else ("partial", "file")

    def _has_runnable(self, role: WorkerRole) -> bool:
        kinds = self._takes(role)
        return any(j.kind in kinds for j in self._waiting)

    def _fair_share(self, role: WorkerRole, runnable: int, max_batch: int) -> int:
        """Batch size cap that leaves work for idle workers of the same role: on CPU, two half
        batches on two cores finish sooner than one full batch on one core."""
        idle_others = self._roles.count(role) - self._running[role] - 1
        if idle_others <= 0:
            return max_batch
        return max(min(max_batch, -(-runnable // (idle_others + 1))), 1)

    def _take_batch(self, role: WorkerRole) -> tuple[list[_Job], bool] | None:
        """(next batch, whether it runs alone) for a worker of ``role``, or None to stop."""
        cfg = self.config
        with self._cond:
            while not self._has_runnable(role):
                if self._stopping and not self._waiting:
                    return None
                self._cond.wait(cfg.partial_deadline_s if self._waiting else None)
                self._shed_stale_partials()
            max_batch = cfg.max_batch_size
            busy = sum(self._running.values()) > 0 or self._clock() - self._last_batch_end < 0.05
            if busy and len(self._waiting) < max_batch:
                # Under load a few milliseconds buy a fuller batch; an idle server answers at once.
                self._cond.wait(cfg.max_wait_s)
            self._shed_stale_partials()
            # Cancelled jobs (their session went away) are dropped before they cost compute.
            self._waiting = [j for j in self._waiting if not j.cancelled()]
            # The most urgent kind this worker may take; pick_batch then sees one kind only
            # (file segments as finals: no partial padding cap, a segment is up to a final's length).
            kind = next((k for k in self._takes(role) if any(j.kind == k for j in self._waiting)), None)
            eligible = [j for j in self._waiting if j.kind == kind]
            waiting = [Waiting(j, j.kind != "partial", len(j.request.audio)) for j in eligible]
            runnable = len(waiting)
            chosen = pick_batch(
                waiting,
                self._fair_share(role, runnable, max_batch),
                int(self.max_padded_seconds() * SAMPLE_RATE),
                max_partial_padded_samples=int(cfg.max_partial_padded_seconds * SAMPLE_RATE),
            )
            batch = [eligible[i] for i in chosen]
            taken = {id(j) for j in batch}
            self._waiting = [j for j in self._waiting if id(j) not in taken]
            metrics.QUEUE_DEPTH.set(len(self._waiting))
            alone = self.lone_calls and not self._waiting and not any(self._running.values())
            alone = alone and self.capacity.expected_load() < cfg.lone_call_max_load
            if batch:
                self._running[role] += 1
                self._running_background += not batch[0].is_final
            return batch, alone

    def _shed_stale_partials(self) -> None:
        now = self._clock()
        keep = []
        for job in self._waiting:
            if job.kind == "partial" and now - job.enqueued > self.config.partial_deadline_s:
                job.deliver(Failed("partial_shed", "partial dropped", True))
            else:
                keep.append(job)
        self._waiting = keep

    def _loop(self, role: WorkerRole) -> None:
        if self._worker_init is not None:
            self._worker_init(role)
        while (taken := self._take_batch(role)) is not None:
            batch, alone = taken
            if batch:
                try:
                    self._run(batch, alone)
                except Exception:
                    # A bug outside the engine's retry policy: nobody may wait for these forever.
                    log.error(
                        "batch of %d failed; sessions %s",
                        len(batch),
                        ",".join(sorted({j.session_id for j in batch})),
                    )
                    failed = Failed("internal_error", "internal error transcribing this utterance", True)
                    for job in batch:
                        job.deliver(failed)
                    raise
                finally:
                    with self._cond:
                        self._running[role] -= 1
                        self._running_background -= not batch[0].is_final
                        self._last_batch_end = self._clock()
                        self._cond.notify_all()  # a held-back partial may run now

    def _run(self, batch: list[_Job], alone: bool) -> None:
        started = self._clock()
        for job in batch:
            waited = started - job.enqueued
            metrics.QUEUE_WAIT_SECONDS.labels(job.kind).observe(waited)
            if job.is_final:
                self._recent_wait = (waited, started)
        backend = self.model.backend
        model_started = time.perf_counter()
        with running_alone(alone) as call:
            outcomes = self.runner.run([j.request for j in batch])
        elapsed = time.perf_counter() - model_started
        metrics.BATCH_INFERENCE_SECONDS.labels(batch[0].kind).observe(elapsed)
        metrics.BATCH_SIZE.observe(len(batch))
        if batch[0].is_final and not call.widened:
            # A widened batch had every core: not what a batch costs under load (capacity.py).
            audio_s = sum(len(j.request.audio) for j in batch) / SAMPLE_RATE
            self.capacity.record_batch_on(backend, lambda: self.model.backend, audio_s, elapsed)
        failed = [(j, o) for j, o in zip(batch, outcomes, strict=True) if isinstance(o, Failed)]
        if failed:
            log.warning(
                "%d of %d utterances failed (%s); sessions %s",
                len(failed),
                len(batch),
                failed[0][1].code,
                ",".join(sorted({j.session_id for j, _ in failed})),
            )
        for job, outcome in zip(batch, outcomes, strict=True):
            job.deliver(outcome)
