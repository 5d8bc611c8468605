"""Silero VAD, batched across every session: speech probability per 32 ms frame.

The model (``inference/silero.py``) takes its recurrent state as an input, so frames from many
sessions run as one batch while each session keeps its own state. One thread per process
(owned by the app's lifespan, supervised: a crash fails the requests it held with
``VadFailedError`` and the thread restarts) runs the model; sessions await futures.

Concurrency: a ``VadStream`` has at most one request in flight (its session awaits each
one), so its frames are processed in order; only the VAD thread touches stream state.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

import numpy as np

from emostt.errors import EmosttError
from emostt.inference.silero import FloatArray, SileroVad, VadStream
from emostt.observability import metrics
from emostt.supervision import RequestWorker, fail_threadsafe, resolve_threadsafe
from emostt.vocabulary import VAD_FRAME_SAMPLES

# How long the VAD thread lets requests gather before running them as one batch (see
# VadBatcher._gather_more): small against the 100 ms chunks devices send.
COALESCE_S = 0.004


class VadFailedError(EmosttError):
    code = "vad_failed"
    retryable = True


@dataclass
class _Request:
    stream: VadStream
    frames: FloatArray
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[list[float]]
    probs: list[float] = field(default_factory=list)


class VadBatcher(RequestWorker[_Request]):
    def __init__(self, max_batch: int = 256, coalesce_s: float = COALESCE_S) -> None:
        super().__init__("emostt-vad", "vad")
        self._model = SileroVad()
        self._max_batch = max_batch
        self._coalesce_s = coalesce_s

    async def speech_probs(self, stream: VadStream, frames: FloatArray, *, timed: bool = True) -> list[float]:
        """Probabilities for consecutive frames of one stream, shape (n, VAD_FRAME_SAMPLES).
        ``timed=False`` keeps the request out of the live latency histogram (file chunks)."""
        assert frames.ndim == 2 and frames.shape[1] == VAD_FRAME_SAMPLES
        loop = asyncio.get_running_loop()
        request = _Request(stream, frames, loop, loop.create_future())
        started = time.perf_counter()
        with self._cond:
            if self.failed or self._stopping:  # nobody would ever answer
                raise VadFailedError("voice activity detection is unavailable")
            self._pending.append(request)
            self._cond.notify()
        probs = await request.future
        if timed:
            metrics.VAD_SECONDS.observe(time.perf_counter() - started)
        return probs

    def run_batch(self, streams: list[VadStream], frames: FloatArray) -> FloatArray:
        """One frame per stream: (B, VAD_FRAME_SAMPLES) -> (B,) probabilities; updates each stream."""
        return self._model.step(streams, frames)

    def _loop(self) -> None:
        while True:
            with self._cond:
                idle = not self._pending
                while not self._pending and not self._stopping:
                    self._cond.wait()
                if self._stopping and not self._pending:
                    return
                if idle:  # under load requests pile up while a batch runs: no waiting then
                    self._gather_more()
                requests, self._pending = self._pending, []
            try:
                self._run(requests)
            except Exception:
                # Their streams' states may be half-updated: the sessions start them afresh.
                for q in requests:
                    error = VadFailedError("voice activity detection failed on this audio; it was skipped")
                    fail_threadsafe(q.loop, q.future, error)
                raise
            for q in requests:
                resolve_threadsafe(q.loop, q.future, q.probs)
            # While it waits for the next batch, the thread must not keep this one's frames alive:
            # they may be a view of a whole decoded file (the REST path), held until then.
            del requests

    def _gather_more(self) -> None:
        """After an idle spell, hold the first request up to ``coalesce_s`` while others
        arrive (lock held).

        Devices send their chunks at random phases, so under load requests reach this thread one
        by one and each would run as a batch of one frame (~170 µs a frame, against ~70 µs in a
        batch of 8+). A few milliseconds of waiting, against 100 ms audio chunks, turns them into
        batches. Once the thread is busy, requests gather while each batch runs, so it never
        waits then: waiting at saturation would only idle the thread.
        """
        deadline = time.monotonic() + self._coalesce_s
        while len(self._pending) < self._max_batch and not self._stopping:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            self._cond.wait(remaining)

    def _run(self, requests: list[_Request]) -> None:
        # Round r runs the r-th frame of every request that has one, so each stream stays in order.
        for r in range(max(len(q.frames) for q in requests)):
            active = [q for q in requests if len(q.frames) > r]
            for lo in range(0, len(active), self._max_batch):
                group = active[lo : lo + self._max_batch]
                probs = self.run_batch([q.stream for q in group], np.stack([q.frames[r] for q in group]))
                for q, p in zip(group, probs, strict=True):
                    q.probs.append(float(p))
