"""What the transports and sessions need from the model side: ``BatchService``.

Two implementations: ``Batcher`` (batcher.py), the model workers in this process (the default,
one process serving everything), and ``RemoteBatcher`` (remote.py), a front-end process's
link to the one process that owns the model and batches across every front end
(docs/engine.md, "Front-end processes"). Sessions cannot tell them apart.
"""

from __future__ import annotations

from typing import Protocol

from emostt.inference.engine import ModelInfo, TranscriptionRequest
from emostt.policy.outcome import Outcome


class BatchService(Protocol):
    @property
    def ready(self) -> bool:
        """The model is loaded, warmed and serving."""
        ...

    @property
    def model(self) -> ModelInfo | None:
        """The model serving now (None until a front end hears from its model process)."""
        ...

    @property
    def depth(self) -> int:
        """Utterances waiting for a model worker."""
        ...

    @property
    def partial_interval_scale(self) -> float:
        """1.0 while finals flow freely, up to 4.0 under load: how much to stretch partial cadence."""
        ...

    def failure(self) -> str | None:
        """Why serving cannot recover by itself (liveness fails), or None."""
        ...

    def set_sessions(self, sessions: int) -> None:
        """The sessions this process has open now."""
        ...

    def open_sessions(self) -> int:
        """The sessions open on the whole server (every front end)."""
        ...

    def capacity_sessions(self) -> float | None:
        """Sessions the server can serve at its target utilization; None until measured."""
        ...

    def admission(self) -> str | None:
        """Why one more session must be refused now (an error code), or None to admit it."""
        ...

    def overloaded(self) -> bool:
        """Live finals already wait too long: new work would make them later."""
        ...

    def record_speech(self, audio_s: float) -> None:
        """A session received this much speech (demand, for the capacity model)."""
        ...

    async def submit(self, request: TranscriptionRequest, *, is_final: bool, session_id: str = "") -> Outcome:
        """A live session's final or partial."""
        ...

    def stop(self, timeout: float = 30.0) -> None:
        """Finish or fail what is in flight; called once, after the sessions are drained."""
        ...

    async def submit_file_segment(self, request: TranscriptionRequest, *, request_id: str) -> Outcome:
        """A segment of an uploaded file, served after live work."""
        ...
