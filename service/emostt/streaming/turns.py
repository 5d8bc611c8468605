"""The end-of-turn model, batched across every session: P(the speaker's turn is complete).

A session asks ``await turns.probability(audio)`` with the turn's audio (16 kHz float32; only the
last 8 s count) and gets the model's probability that the turn is complete (Smart Turn v3.2,
``inference/smart_turn.py``). One thread per process (owned by the app's lifespan, supervised)
runs the requests of all sessions in batches of up to ``max_batch``; requests gather while a
batch runs, so there is no idle wait for a batch to fill (a turn costs about 0.1 s of one core,
less in a batch: docs/engine.md, "Turn model").

Bounded: at most ``max_pending`` requests wait; one more is refused at once with
``TurnBusyError``, since an answer that comes after a long queue is useless to endpointing. A
request whose caller stops waiting (speech resumed, the utterance ended, the session closed)
leaves the queue at once, so the model never spends time on a question nobody will read. A
crash fails every request it held or that was waiting (``TurnFailedError``) and the thread
restarts; a request never waits longer than ``timeout_s``. Both errors are ``TurnFailedError``:
the caller endpoints without the model for that turn.

Concurrency: ``probability`` runs on an event loop (any number of loops); the request list is
guarded by one condition; only the turn thread runs the model; futures are resolved on their
own loop.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from emostt.errors import EmosttError
from emostt.inference.smart_turn import SmartTurn
from emostt.inference.turn_features import WINDOW_SAMPLES, FloatArray
from emostt.observability import metrics
from emostt.supervision import RequestWorker, fail_threadsafe, resolve_threadsafe

# Measured on one core (docs/BENCHMARKS.md, "End-of-turn model"): ~90 ms for one turn, ~70 ms a
# turn in a batch of 4 or 8. Batches of 4 keep most of that saving while a request that arrives
# during a batch waits ~0.3 s rather than ~0.55 s. A session has at most one question waiting
# (streaming/turn_taking.py), so 16 waiting is one per session of a loaded 2-core server: four
# batches, ~1 s, still inside the shortest maximum silence (2 s). Beyond that an answer would
# come after the silence endpoint had already fired: refusing is better.
MAX_BATCH = 4
MAX_PENDING = 16
TIMEOUT_S = 10.0  # a safety net, never reached while the thread runs


class TurnFailedError(EmosttError):
    """No probability for this turn: the model failed or is unavailable."""

    code = "turn_failed"
    retryable = True


class TurnBusyError(TurnFailedError):
    """The turn worker's queue is full."""

    code = "turn_busy"


@dataclass(eq=False)  # identity: a request is found in the queue by itself, not by its audio
class _Request:
    audio: FloatArray
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[float]


class TurnBatcher(RequestWorker[_Request]):
    def __init__(
        self,
        path: Path,
        *,
        max_batch: int = MAX_BATCH,
        max_pending: int = MAX_PENDING,
        timeout_s: float = TIMEOUT_S,
    ) -> None:
        super().__init__("emostt-turn", "turn")
        self._model = SmartTurn(path)
        self.path = path
        self._max_batch = max_batch
        self._max_pending = max_pending
        self._timeout_s = timeout_s

    async def probability(self, audio: FloatArray) -> float:
        """P(turn complete) for a turn's audio (16 kHz mono float32; the last 8 s are used).
        Raises ``TurnBusyError`` when the queue is full, ``TurnFailedError`` when the model fails."""
        # A copy of the window: the caller's buffer may change while the request waits.
        window = np.array(audio[-WINDOW_SAMPLES:], dtype=np.float32)
        loop = asyncio.get_running_loop()
        request = _Request(window, loop, loop.create_future())
        started = time.perf_counter()
        with self._cond:
            if self.failed or self._stopping:
                metrics.TURN_CALLS.labels("failed").inc()
                raise TurnFailedError("end-of-turn detection is unavailable")
            if len(self._pending) >= self._max_pending:
                metrics.TURN_CALLS.labels("refused").inc()
                raise TurnBusyError("end-of-turn detection is busy")
            self._pending.append(request)
            self._cond.notify()
        try:
            probability = await asyncio.wait_for(request.future, self._timeout_s)
        except asyncio.CancelledError:
            self._withdraw(request)
            raise
        except (TurnFailedError, TimeoutError) as exc:
            metrics.TURN_CALLS.labels("failed").inc()
            if isinstance(exc, TurnFailedError):
                raise
            raise TurnFailedError("end-of-turn detection took too long") from None
        metrics.TURN_MODEL_SECONDS.observe(time.perf_counter() - started)
        metrics.TURN_CALLS.labels("ok").inc()
        return probability

    def _withdraw(self, request: _Request) -> None:
        """The caller stopped waiting: a request still queued is dropped (one already in a batch
        runs with it; its answer is ignored)."""
        with self._cond:
            if request in self._pending:
                self._pending.remove(request)
                metrics.TURN_CALLS.labels("withdrawn").inc()

    def run_batch(self, audios: list[FloatArray]) -> list[float]:
        """One model call (the turn thread's); tests override it to record or fail batches."""
        return self._model.predict(audios)

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._pending and not self._stopping:
                    self._cond.wait()
                if not self._pending:  # stopping, and nothing left to answer
                    return
                batch = self._pending[: self._max_batch]
                del self._pending[: self._max_batch]
            try:
                probs = self.run_batch([q.audio for q in batch])
                if len(probs) != len(batch):
                    raise RuntimeError(f"{len(probs)} probabilities for {len(batch)} turns")
                metrics.TURN_BATCH_SIZE.observe(len(batch))
            except Exception:
                # Fail the waiting requests too: if the thread gives up, nobody would answer them.
                with self._cond:
                    batch += self._pending
                    self._pending = []
                for q in batch:
                    error = TurnFailedError("end-of-turn detection failed")
                    fail_threadsafe(q.loop, q.future, error)
                raise
            for q, p in zip(batch, probs, strict=True):
                resolve_threadsafe(q.loop, q.future, p)
