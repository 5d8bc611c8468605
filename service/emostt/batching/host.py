"""The model process's side of the front-end links: every front end's utterances go into one
``Batcher``, so batches span the connections of all front-end processes.

Concurrency rules: each front end's messages arrive on its channel's reader thread, which
queues jobs with ``Batcher.enqueue`` (never blocking: a full waiting list is answered with a
refusal at once); outcomes are encoded on the model worker that produced them and queued on
the channel (its sender thread writes). The status thread, every ``status_interval_s``, feeds
the shared session and speech counters to the capacity model and sends every front end the
load and readiness it decides admission with.
"""

from __future__ import annotations

import functools
import logging
import threading
from multiprocessing.connection import Connection

from emostt.batching.batcher import Batcher, BatcherFullError, BatcherStoppedError
from emostt.batching.channel import Channel
from emostt.batching.slots import FrontendSlots
from emostt.batching.wire import (
    CancelMessage,
    JobMessage,
    OutcomeMessage,
    RefusalCode,
    Refused,
    StatusMessage,
    decode,
    encode_outcome,
    encode_status,
)
from emostt.inference.engine import ModelInfo
from emostt.policy.outcome import Outcome

log = logging.getLogger(__name__)

LOADING = ModelInfo(name="(loading)", revision="", device="", precision="", backend="")


class _Link:
    """One front end's channel and the jobs it has in flight."""

    def __init__(self, index: int, conn: Connection, host: BatcherHost) -> None:
        self.index = index
        self._host = host
        self._lock = threading.Lock()
        self._in_flight: set[int] = set()
        self._cancelled: set[int] = set()
        self.channel = Channel(conn, f"emostt-model-link-{index}", self._received, self._closed)

    def _received(self, data: bytes) -> None:
        message = decode(data)
        if isinstance(message, JobMessage):
            self._queue(message)
        elif isinstance(message, CancelMessage):
            with self._lock:
                if message.job_id in self._in_flight:
                    self._cancelled.add(message.job_id)
        else:
            raise ValueError(f"the model process does not take {type(message).__name__}")

    def _queue(self, job: JobMessage) -> None:
        batcher = self._host.batcher
        if batcher is None:
            self._refuse(job.job_id, Refused("shutting_down", "the server is not ready; retry later"))
            return
        with self._lock:
            self._in_flight.add(job.job_id)
        try:
            batcher.enqueue(
                job.request,
                job.kind,
                job.session_id,
                deliver=functools.partial(self._deliver, job.job_id),
                cancelled=functools.partial(self._is_cancelled, job.job_id),
            )
        except (BatcherFullError, BatcherStoppedError) as exc:
            with self._lock:
                self._in_flight.discard(job.job_id)
            code: RefusalCode = "overloaded" if isinstance(exc, BatcherFullError) else "shutting_down"
            self._refuse(job.job_id, Refused(code, str(exc)))

    def jobs(self) -> tuple[int, int]:
        """Jobs in flight, and how many of them were cancelled."""
        with self._lock:
            return len(self._in_flight), len(self._cancelled)

    def _refuse(self, job_id: int, refusal: Refused) -> None:
        self.channel.send(encode_outcome(OutcomeMessage(job_id, refusal)))

    def _is_cancelled(self, job_id: int) -> bool:
        """Asked by the batcher, which drops the job (never delivering it) once this is true."""
        with self._lock:
            if job_id not in self._cancelled:
                return False
            self._cancelled.discard(job_id)
            self._in_flight.discard(job_id)
            return True

    def _deliver(self, job_id: int, outcome: Outcome) -> None:
        with self._lock:
            self._in_flight.discard(job_id)
            self._cancelled.discard(job_id)
        self.channel.send(encode_outcome(OutcomeMessage(job_id, outcome)))

    def _closed(self) -> None:
        # The front end exited: what it had queued is nobody's any more.
        with self._lock:
            self._cancelled |= self._in_flight
        self._host.detached(self)


class BatcherHost:
    def __init__(self, slots: FrontendSlots, status_interval_s: float = 0.02) -> None:
        self._slots = slots
        self._interval_s = status_interval_s
        self.batcher: Batcher | None = None
        self._links: dict[int, _Link] = {}
        self._lock = threading.Lock()
        self._speech_seen = [0.0] * slots.count
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._publish_status, name="emostt-model-status", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def serve(self, batcher: Batcher) -> None:
        """The model is warm: queue the front ends' jobs on ``batcher`` from now on."""
        self.batcher = batcher

    def attach(self, index: int, conn: Connection) -> None:
        """A (re)started front end's end of the pipe."""
        link = _Link(index, conn, self)
        with self._lock:
            old = self._links.pop(index, None)
            self._links[index] = link
        if old is not None:
            old.channel.close(0.1)
        link.channel.start()
        self._send_status()  # the front end knows where it stands at once

    def detached(self, link: _Link) -> None:
        with self._lock:
            if self._links.get(link.index) is link:
                del self._links[link.index]

    def jobs(self, index: int) -> tuple[int, int]:
        """Front end ``index``'s jobs in flight, and how many of them were cancelled."""
        with self._lock:
            link = self._links.get(index)
        return link.jobs() if link is not None else (0, 0)

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(1.0)
        with self._lock:
            links, self._links = list(self._links.values()), {}
        for link in links:
            link.channel.close(1.0)

    def status(self) -> StatusMessage:
        batcher = self.batcher
        if batcher is None:
            return StatusMessage(False, None, LOADING, 0, self._slots.total_sessions(), None, False, 1.0)
        return StatusMessage(
            ready=batcher.ready,
            failure=batcher.failure(),
            model=batcher.model,
            depth=batcher.depth,
            open_sessions=batcher.open_sessions(),
            capacity_sessions=batcher.capacity_sessions(),
            overloaded=batcher.overloaded(),
            partial_interval_scale=batcher.partial_interval_scale,
        )

    def _publish_status(self) -> None:
        while not self._stop.wait(self._interval_s):
            try:
                self._collect_counters()
                self._send_status()
            except Exception:  # a bug here must not end status updates for good
                log.exception("model status update failed")

    def _collect_counters(self) -> None:
        batcher = self.batcher
        speech = self._slots.speech_s()
        # A slot below what was seen was reset for a restarted front end: all of it is new.
        new_speech = sum(
            s - seen if s >= seen else s for s, seen in zip(speech, self._speech_seen, strict=True)
        )
        self._speech_seen = speech
        if batcher is not None:
            batcher.set_sessions(self._slots.total_sessions())
            if new_speech > 0:
                batcher.record_speech(new_speech)

    def _send_status(self) -> None:
        data = encode_status(self.status())
        with self._lock:
            links = list(self._links.values())
        for link in links:
            link.channel.send(data)
