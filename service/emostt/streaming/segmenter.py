"""Endpointing as a pure state machine over per-frame speech probabilities.

No audio, no I/O, no clocks: the session feeds one VAD probability per frame and gets back
where utterances start and end, in frame indices. Hysteresis as in Silero's own
``get_speech_timestamps``: speech starts at ``threshold`` and only counts as silence below
``threshold - 0.15``.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from emostt.vocabulary.session_config import EndpointConfig

# Silence kept after speech (at most prefix_padding_ms): enough for the last phone's CTC
# emission; short, so the final's audio is fixed early in the endpointing silence.
TRAILING_PADDING_MS = 100


class EndReason(str, Enum):
    SILENCE = "silence"
    MAX_LENGTH = "max_length"
    FINALIZE = "finalize"
    TURN_MODEL = "turn_model"


@dataclass(frozen=True)
class SpeechStarted:
    start_frame: int  # first frame of the utterance, prefix padding included


@dataclass(frozen=True)
class SpeechEnded:
    start_frame: int
    end_frame: int  # exclusive
    reason: EndReason


SegmentEvent = SpeechStarted | SpeechEnded


class Segmenter:
    """Feed ``push(prob)`` once per frame; ``finalize()`` ends the current utterance now.

    Invariants: utterances never overlap, never exceed ``max_utterance_ms``, and every one
    holds at least one non-silent frame.
    """

    def __init__(self, config: EndpointConfig) -> None:
        self.config = config
        self.frame = 0  # index of the next frame
        self._start: int | None = None  # utterance start (padding included), when in speech
        self._candidate: int | None = None  # first frame of a speech run not yet long enough
        self._silence_run = 0
        self._last_end = 0  # utterances start at or after the previous one's end
        self._resume = False  # a max-length cut happened; speech that goes on starts the next utterance

    @property
    def in_speech(self) -> bool:
        return self._start is not None

    @property
    def utterance_start(self) -> int | None:
        return self._start

    @property
    def trailing_silence_frames(self) -> int:
        """Silent frames at the end of the current utterance so far (0 outside speech)."""
        return self._silence_run if self._start is not None else 0

    def predicted_end(self) -> int | None:
        """The ``end_frame`` the current utterance will have if silence continues to the endpoint.

        Known once the trailing silence kept in an utterance has passed; from then until the
        endpoint, the audio of the final is fixed unless speech resumes (which makes this None
        again). Lets a caller decode the final while the endpointer is still waiting.
        """
        if self._start is None or self._silence_run == 0 or self._silence_run < self._trail_frames():
            return None
        return max(self.frame - self._silence_run + self._trail_frames(), self._start + 1)

    def _trail_frames(self) -> int:
        # Keep a little trailing silence (as prefix padding does at the start) but not all of it.
        return self.config.frames(min(self.config.prefix_padding_ms, TRAILING_PADDING_MS))

    def reconfigure(self, config: EndpointConfig) -> None:
        self.config = config

    def push(self, prob: float) -> list[SegmentEvent]:
        index = self.frame
        self.frame += 1
        if self._start is None:
            return self._push_idle(index, prob)
        return self._push_speech(index, prob)

    def _push_idle(self, index: int, prob: float) -> list[SegmentEvent]:
        cfg = self.config
        if self._resume:
            self._resume = False
            if prob >= cfg.negative_threshold:  # speech goes on across a max-length cut
                return [self._begin(index)]
        if prob < cfg.threshold:
            # An onset is min_speech_ms of consecutive speech frames.
            self._candidate = None
            return []
        if self._candidate is None:
            self._candidate = index
        if index - self._candidate + 1 < cfg.frames(cfg.min_speech_ms):
            return []
        # Padding reaches back, but not into the previous utterance nor past the length limit.
        start = max(self._candidate - cfg.frames(cfg.prefix_padding_ms), self._last_end, 0)
        start = max(start, index + 2 - cfg.frames(cfg.max_utterance_ms))
        return [self._begin(min(start, index))]

    def _push_speech(self, index: int, prob: float) -> list[SegmentEvent]:
        cfg = self.config
        assert self._start is not None
        self._silence_run = self._silence_run + 1 if prob < cfg.negative_threshold else 0
        end = index + 1
        if self._silence_run >= max(cfg.frames(cfg.silence_duration_ms), 1):
            trail = min(self._silence_run, self._trail_frames())
            return [self._end(end - self._silence_run + trail, EndReason.SILENCE)]
        if end - self._start >= cfg.frames(cfg.max_utterance_ms):
            event = self._end(end, EndReason.MAX_LENGTH)
            self._resume = True
            return [event]
        return []

    def end_turn(self) -> list[SegmentEvent]:
        """End the current utterance in its pause, as the silence endpoint would (the same end
        frame as ``predicted_end``, so a final decoded speculatively is the one sent): the turn
        model said the turn is complete."""
        if self._start is None or self._silence_run == 0:
            return []
        trail = min(self._silence_run, self._trail_frames())
        return [self._end(self.frame - self._silence_run + trail, EndReason.TURN_MODEL)]

    def finalize(self) -> list[SegmentEvent]:
        self._candidate = None
        self._resume = False
        if self._start is None:
            return []
        return [self._end(self.frame, EndReason.FINALIZE)]

    def _begin(self, start: int) -> SpeechStarted:
        self._start = start
        self._candidate = None
        self._silence_run = 0
        return SpeechStarted(start)

    def _end(self, end: int, reason: EndReason) -> SpeechEnded:
        assert self._start is not None
        event = SpeechEnded(self._start, max(end, self._start + 1), reason)
        self._last_end = event.end_frame
        self._start = None
        self._candidate = None
        self._silence_run = 0
        return event
