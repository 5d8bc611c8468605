"""How many streaming sessions this server can serve, learned while serving.

Two measured quantities, each a time-decayed ratio of sums (recent behaviour counts most,
old behaviour fades with ``halflife_s``), with a prior that fades as evidence accumulates:

- cost: model seconds per second of final audio, from every final batch the workers run
  (on this machine, under the contention it actually has), learned afresh when the engine
  changes backend while serving (``record_batch(restart=True)``);
- demand: seconds of final audio a session submits per second it is open (real-time speech
  with pauses is well below 1; the prior assumes continuous speech until measured).

``capacity = workers x target_utilization / (cost x demand)`` sessions. Admission compares
open sessions with it, so a burst of new connections is refused before it costs anything,
and the estimate recovers as soon as load ends because it does not depend on queues.

Thread-safe: model workers record batches, the event loop records sessions and demand.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from emostt.observability import metrics

# Session-seconds of pseudo-evidence behind the demand prior: about one minute of one session.
DEMAND_PRIOR_WEIGHT_S = 60.0


@dataclass(frozen=True)
class CapacityConfig:
    workers: int = 1  # model workers running finals side by side
    target_utilization: float = 0.7
    demand_prior: float = 1.0
    halflife_s: float = 60.0


def session_refusal(open_sessions: int, capacity: float | None, overloaded: bool) -> str | None:
    """Why one more session must be refused (an error code), or None to admit it: the open
    sessions already fill the measured capacity, or live finals already wait too long."""
    if capacity is not None and open_sessions + 1 > max(capacity, 1.0):
        return "overloaded"
    return "overloaded" if overloaded else None


class CapacityModel:
    def __init__(self, config: CapacityConfig, clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config
        self._clock = clock
        self._lock = threading.Lock()
        # The engine backend the cost was measured on (record_batch_on), and its own lock: see there.
        self._backend_lock = threading.Lock()
        self._measured_backend: str | None = None
        self._decay = math.log(2) / config.halflife_s
        self._last = clock()
        self._sessions = 0
        self._model_s = 0.0  # decayed sums
        self._cost_audio_s = 0.0
        self._demand_audio_s = 0.0
        self._session_s = 0.0
        self._publish()

    def forget(self) -> None:
        """Drop what was measured so far (warm-up batches that paid one-off costs)."""
        with self._lock:
            self._model_s = self._cost_audio_s = self._demand_audio_s = self._session_s = 0.0
        self._publish()

    def record_batch_on(
        self, backend: str, serving: Callable[[], str], audio_s: float, model_s: float
    ) -> None:
        """``record_batch`` for a final batch that started on ``backend``, the engine now serving
        ``serving()``. When the engine's backend has changed (torch -> onnx while serving), the cost
        is re-learned from the first batch on the new one: the old estimate stays in force until
        then, and batches of the old backend that end later, or that ran across the switch, are
        not recorded."""
        # Under one lock, and reading the backend inside it: a late batch of the old backend
        # cannot land after the first batch of the new one and restart the cost again.
        with self._backend_lock:
            now = serving()
            if backend != now:
                return
            restart = now != self._measured_backend
            self._measured_backend = now
            self.record_batch(audio_s, model_s, restart=restart)

    def record_batch(self, audio_s: float, model_s: float, *, restart: bool = False) -> None:
        """A final batch: ``audio_s`` seconds of audio took ``model_s`` seconds on one worker.
        ``restart``: the cost is learned afresh from this batch (the engine changed, e.g. its
        backend); demand, a property of the sessions, is kept."""
        if audio_s <= 0:
            return
        with self._lock:
            self._advance()
            if restart:
                self._model_s = self._cost_audio_s = 0.0
            self._model_s += model_s
            self._cost_audio_s += audio_s
        self._publish()

    def record_demand(self, audio_s: float) -> None:
        """A session submitted a final of ``audio_s`` seconds."""
        with self._lock:
            self._advance()
            self._demand_audio_s += audio_s
        self._publish()

    def set_sessions(self, sessions: int) -> None:
        with self._lock:
            self._advance()
            self._sessions = sessions
        self._publish()

    @property
    def sessions(self) -> int:
        """The sessions open now, as last set."""
        return self._sessions

    @property
    def cost(self) -> float | None:
        """Model seconds per audio second, or None before the first measured batch."""
        with self._lock:
            return self._model_s / self._cost_audio_s if self._cost_audio_s > 0 else None

    @property
    def demand(self) -> float:
        """Final audio seconds per session-second (the prior, blended away by evidence)."""
        with self._lock:
            self._advance()
            prior = self.config.demand_prior
            return (self._demand_audio_s + prior * DEMAND_PRIOR_WEIGHT_S) / (
                self._session_s + DEMAND_PRIOR_WEIGHT_S
            )

    def capacity_sessions(self) -> float | None:
        cost = self.cost
        if not cost:  # unmeasured (or too fast to measure): no estimate yet
            return None
        cfg = self.config
        return cfg.workers * cfg.target_utilization / (cost * self.demand)

    def expected_load(self) -> float:
        """Share of the workers' time the open sessions are expected to keep busy (0 while
        unmeasured): ``sessions x cost x demand / workers``."""
        return self.utilization() * self.config.target_utilization

    def utilization(self) -> float:
        """Share of the target the open sessions are expected to use (0 while unmeasured)."""
        capacity = self.capacity_sessions()
        with self._lock:
            sessions = self._sessions
        return sessions / capacity if capacity else 0.0

    def _advance(self) -> None:
        """Decay the sums to now and add the session-seconds since the last call (lock held)."""
        now = self._clock()
        dt = max(now - self._last, 0.0)
        self._last = now
        if dt == 0:
            return
        keep = math.exp(-self._decay * dt)
        self._model_s *= keep
        self._cost_audio_s *= keep
        self._demand_audio_s *= keep
        # Integral of `sessions` over the interval, each instant decayed to now.
        self._session_s = self._session_s * keep + self._sessions * (1 - keep) / self._decay

    def _publish(self) -> None:
        capacity = self.capacity_sessions()
        metrics.CAPACITY_SESSIONS.set(capacity if capacity is not None else math.nan)
        metrics.SESSION_DEMAND.set(self.demand)
        cost = self.cost
        metrics.MODEL_COST.set(cost if cost is not None else math.nan)
