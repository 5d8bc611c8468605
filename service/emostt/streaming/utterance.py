"""An utterance's bookkeeping inside a session, and the session's counters. Event-loop only."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from emostt.inference.engine import TranscriptionRequest
from emostt.observability import metrics
from emostt.policy.outcome import Outcome
from emostt.vocabulary.session_config import SessionConfig


@dataclass
class Speculation:
    end_frame: int
    outcome: asyncio.Task[Outcome]


@dataclass
class Utterance:
    utterance_id: str
    start_frame: int
    frames: list[tuple[int, npt.NDArray[np.float32]]] = field(default_factory=list)
    partial_frames: int = 0  # utterance length (frames) at the last partial request
    partial_in_flight: bool = False
    partial_request: asyncio.Task[Outcome] | None = None
    ended: bool = False
    speculation: Speculation | None = None
    # When the audio holding the utterance's last speech frame so far was received (perf_counter).
    speech_end_at: float = 0.0
    # The turn model's P(turn complete) when the utterance ended (semantic turns), else None.
    end_of_turn_confidence: float | None = None

    def audio(self, end_frame: int | None = None) -> npt.NDArray[np.float32]:
        frames = [f for i, f in self.frames if end_frame is None or i < end_frame]
        return np.concatenate(frames) if frames else np.zeros(0, dtype=np.float32)

    def drop_partial(self) -> None:
        """A partial still waiting for the model is dropped once the final is being decoded."""
        if self.partial_request is not None:
            self.partial_request.cancel()

    def discard_speculation(self) -> None:
        """Speech resumed (or the utterance is gone): the final decoded early is not used."""
        if self.speculation is not None:
            discarded = self.speculation.outcome
            discarded.cancel()
            # Nobody awaits it any more: collect its exception, if any, so none goes unreported.
            discarded.add_done_callback(lambda t: t.cancelled() or t.exception())
            self.speculation = None
            metrics.SPECULATIVE_FINALS.labels("discarded").inc()


def transcription_request(config: SessionConfig, audio: npt.NDArray[np.float32]) -> TranscriptionRequest:
    """What the model is asked for ``audio`` under the session's ``config``."""
    return TranscriptionRequest(
        audio,
        language=config.language,
        use_itn=config.use_itn,
        word_timestamps=config.word_timestamps,
        known_emotion_only=config.known_emotion_only,
        keyterms=config.keyterms,
    )


@dataclass
class SessionStats:
    """What the session-end log line reports."""

    utterances: int = 0
    finals: int = 0
    errors: int = 0
