"""What the endpoints share: settings, the batcher, the VAD, the open sessions. Event-loop only."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from emostt.batching.service import BatchService
from emostt.config import Settings
from emostt.inference.engine import ModelInfo
from emostt.observability import metrics
from emostt.results.redis_streams import ResultsPublisher
from emostt.streaming.turns import TurnBatcher
from emostt.streaming.vad import VadBatcher
from emostt.vocabulary import CLOSE_OVERLOADED, CLOSE_RESTART


class Drainable(Protocol):
    def drain(self) -> None:
        """Flush this session's finals, then close it with 1012."""

    def interrupt(self, code: int, error: str, message: str) -> None:
        """End the session now: unfinished utterances get ``error`` events, then close ``code``."""


@dataclass(frozen=True)
class Refusal:
    code: int  # WebSocket close code
    error: str  # error event code
    message: str


@dataclass(frozen=True)
class Readiness:
    ready: bool
    refusal: Refusal | None  # why a new session would be refused now, if it would
    full: bool  # refused for capacity (connection limit or measured overload)


@dataclass
class AppState:
    settings: Settings
    batcher: BatchService | None = None
    vad: VadBatcher | None = None
    turns: TurnBatcher | None = None  # the end-of-turn model; None when turn_model is off
    results: ResultsPublisher | None = None
    ready: bool = False
    draining: bool = False
    connections: dict[str, Drainable] = field(default_factory=dict)
    # Carrier sockets still open: a call's sessions end before its socket closes, and the drain
    # waits for that close too (else the server's own shutdown closes the socket first, reasonless).
    open_calls: int = 0

    @property
    def model(self) -> ModelInfo | None:
        """The model serving now (its backend changes when the ONNX export is ready)."""
        return self.batcher.model if self.batcher is not None else None

    def admission(self) -> Refusal | None:
        """Why a new session must be refused now, or None to admit it."""
        if self.draining:
            return Refusal(CLOSE_RESTART.code, "not_ready", "the server is restarting; reconnect")
        if not self.serving() or self.batcher is None:
            return Refusal(CLOSE_OVERLOADED.code, "not_ready", "the server is not ready; retry later")
        # The whole server's sessions: with front-end processes, every process's count.
        if self.batcher.open_sessions() >= self.settings.max_connections:
            return Refusal(
                CLOSE_OVERLOADED.code,
                "too_many_connections",
                "the server is at its connection limit; retry later",
            )
        if self.batcher.admission() is not None:
            return Refusal(
                CLOSE_OVERLOADED.code, "overloaded", "the server is at capacity; retry later or elsewhere"
            )
        return None

    def readiness(self) -> Readiness:
        """What /readyz answers and emostt_ready reports: loaded and warmed, not draining, and
        (with ``readiness_reports_full``) room for one more session."""
        refusal = self.admission()
        full = refusal is not None and refusal.error in ("overloaded", "too_many_connections")
        ready = refusal is None or (full and not self.settings.readiness_reports_full)
        return Readiness(ready, refusal, full)

    def serving(self) -> bool:
        """Loaded, warmed and healthy: work may be submitted (draining aside)."""
        return self.ready and self.batcher is not None and self.batcher.ready and not self.failure()

    def failure(self) -> str | None:
        """Why the process cannot recover by itself (liveness fails), or None."""
        if self.batcher is not None and (failure := self.batcher.failure()):
            return failure
        if self.turns is not None and (failure := self.turns.failed):
            return failure
        return self.vad.failed if self.vad is not None else None

    def add(self, session_id: str, connection: Drainable) -> None:
        self.connections[session_id] = connection
        self._sessions_changed()

    def remove(self, session_id: str) -> None:
        self.connections.pop(session_id, None)
        self._sessions_changed()

    def _sessions_changed(self) -> None:
        metrics.ACTIVE_SESSIONS.set(len(self.connections))
        if self.batcher is not None:
            self.batcher.set_sessions(len(self.connections))

    async def drain(self, timeout_s: float, cut_short: Callable[[], bool] = lambda: False) -> None:
        """Stop taking sessions (readiness fails), let open ones finish their finals, close them
        1012. Past ``timeout_s``, or at once when ``cut_short()`` turns true (a second signal),
        the sessions still open are ended: their unfinished utterances get errors."""
        self.draining = True
        for connection in list(self.connections.values()):
            connection.drain()
        deadline = time.monotonic() + timeout_s
        while (self.connections or self.open_calls) and time.monotonic() < deadline and not cut_short():
            await asyncio.sleep(0.05)
        for connection in list(self.connections.values()):
            connection.interrupt(
                CLOSE_RESTART.code, "shutting_down", "the server is shutting down; reconnect"
            )
        deadline = time.monotonic() + 5.0  # sending those errors is quick; never hang the exit
        while self.connections and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
