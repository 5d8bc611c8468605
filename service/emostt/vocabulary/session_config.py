"""The schema of a session's configuration: what a client may set with a ``config`` message.

Pure pydantic models with the protocol's bounds (docs/protocol.md). They sit below every layer
because the settings check ``session_defaults`` against them at start-up, and the streaming
core, the transports and the policies all read them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError, model_validator

from emostt.errors import InvalidConfigError, validation_problems
from emostt.vocabulary import SAMPLE_RATE, SUPPORTED_INPUT_RATES, VAD_FRAME_MS, Encoding
from emostt.vocabulary.labels import LANGUAGE_HINTS


class EndpointConfig(BaseModel):
    """Endpointing settings: the session config's ``vad`` field (bounds are the protocol's)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    threshold: float = Field(0.5, gt=0.0, lt=1.0)
    silence_duration_ms: int = Field(500, ge=0, le=10_000)
    prefix_padding_ms: int = Field(300, ge=0, le=2_000)
    min_speech_ms: int = Field(96, ge=0, le=2_000)
    # The model's limit is 30 s.
    max_utterance_ms: int = Field(20_000, ge=1_000, le=30_000)

    @property
    def negative_threshold(self) -> float:
        return max(self.threshold - 0.15, self.threshold / 2)

    def frames(self, ms: int) -> int:
        return -(-ms // VAD_FRAME_MS)


class GatingConfig(BaseModel):
    """Gating settings: the session config's ``gating`` field."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    min_confidence: float = Field(0.0, ge=0.0, le=1.0)
    min_emotion_score: float = Field(0.0, ge=0.0, le=1.0)
    min_language_score: float = Field(0.0, ge=0.0, le=1.0)
    gate_nospeech: bool = True
    gate_non_speech_events: bool = True
    drop_gated: bool = False  # the client asked not to receive gated finals at all


class MoodConfig(BaseModel):
    """Mood settings: the session config's ``mood`` field (bounds are the protocol's)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    enabled: bool = True
    # Audio seconds after which a final's evidence counts half.
    half_life_s: float = Field(15.0, ge=1.0, le=3600.0)
    # How far (in probability) a new label must lead the current one to count towards a change.
    min_margin: float = Field(0.1, ge=0.0, le=0.5)
    # Consecutive counted finals on which the new label must lead before the mood changes.
    min_updates: int = Field(2, ge=1, le=5)


Eagerness = Literal["low", "medium", "high", "auto"]


@dataclass(frozen=True)
class TurnDefaults:
    """What an eagerness means when a client names no thresholds of its own."""

    threshold: float  # P(turn complete) at a pause that ends the turn
    eager_threshold: float  # P that sends eager_end_of_turn (the turn stays open)
    max_silence_ms: int  # the turn ends after this much silence whatever the model says


# Eagerness as OpenAI's semantic_vad defines it: how long at most to wait for a user who paused
# (low 8 s, medium 4 s, high 2 s; auto is medium). The thresholds: docs/protocol.md, "Turns".
EAGERNESS: dict[str, TurnDefaults] = {
    "low": TurnDefaults(0.7, 0.5, 8_000),
    "medium": TurnDefaults(0.5, 0.3, 4_000),
    "high": TurnDefaults(0.3, 0.2, 2_000),
    "auto": TurnDefaults(0.5, 0.3, 4_000),
}


class TurnDetection(BaseModel):
    """The session config's ``turn_detection``: how a user's turn ends.

    ``silence``: after ``vad.silence_duration_ms`` of silence. ``semantic``: at a pause of
    ``min_pause_ms`` the turn model says whether the turn is complete (docs/protocol.md, "Turns").
    """

    model_config = ConfigDict(extra="forbid", frozen=True)
    type: Literal["silence", "semantic"] = "silence"
    eagerness: Eagerness = "auto"
    threshold: float | None = Field(None, gt=0.0, lt=1.0)
    eager_threshold: float | None = Field(None, gt=0.0, lt=1.0)
    min_pause_ms: int = Field(200, ge=96, le=2_000)
    max_silence_ms: int | None = Field(None, ge=200, le=10_000)

    def effective(self) -> TurnDefaults:
        """The thresholds and the longest silence in force: the client's, else its eagerness's."""
        defaults = EAGERNESS[self.eagerness]
        return TurnDefaults(
            self.threshold if self.threshold is not None else defaults.threshold,
            self.eager_threshold if self.eager_threshold is not None else defaults.eager_threshold,
            self.max_silence_ms if self.max_silence_ms is not None else defaults.max_silence_ms,
        )


# As many as AssemblyAI's keyterms_prompt takes; a term is a word or a short phrase.
MAX_KEYTERMS = 100
MAX_KEYTERM_CHARS = 64
Keyterm = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=MAX_KEYTERM_CHARS)]


def keyterms_from_prompt(prompt: str) -> tuple[str, ...]:
    """OpenAI's ``prompt`` as keyterms (REST and Realtime): the prompt is read as a list, split at
    commas, semicolons and line breaks; a piece longer than a keyterm (prose, not a term) is
    skipped; at most ``MAX_KEYTERMS``. ``"Ada Lovelace, Babbage; Analytical Engine"`` gives three
    keyterms; a prompt written as sentences gives none (CTC decoding takes no context text)."""
    pieces = (p.strip() for p in re.split(r"[,;\n]", prompt))
    return tuple(p for p in pieces if 0 < len(p) <= MAX_KEYTERM_CHARS)[:MAX_KEYTERMS]


class SessionConfig(BaseModel):
    """Everything a client may set with a ``config`` message (or, for sample_rate, the URL)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    language: str = "auto"
    use_itn: bool = True
    interim_results: bool = True
    partial_interval_ms: int = Field(600, ge=100, le=10_000)
    word_timestamps: bool = False
    known_emotion_only: bool = False
    sample_rate: int = SAMPLE_RATE
    encoding: Encoding = "pcm16"
    vad: EndpointConfig = Field(default_factory=EndpointConfig)
    gating: GatingConfig = Field(default_factory=GatingConfig)
    mood: MoodConfig = Field(default_factory=MoodConfig)
    turn_detection: TurnDetection = Field(default_factory=TurnDetection)
    # The words that matter (names, products, commands): decoding is biased towards them
    # (docs/protocol.md, "Keyterms"). A new list replaces the old one from the next utterance.
    keyterms: tuple[Keyterm, ...] = Field((), max_length=MAX_KEYTERMS)

    @model_validator(mode="after")
    def _check_choices(self) -> SessionConfig:
        if self.language not in LANGUAGE_HINTS:
            raise ValueError(f"language must be one of {', '.join(LANGUAGE_HINTS)}")
        if self.sample_rate not in SUPPORTED_INPUT_RATES:
            raise ValueError(f"sample_rate must be one of {', '.join(map(str, SUPPORTED_INPUT_RATES))}")
        return self

    def updated(self, changes: dict[str, Any]) -> SessionConfig:
        """A new config with ``changes`` merged in (nested vad/gating/mood/turn_detection merge field
        by field)."""
        merged = self.model_dump()
        for key, value in changes.items():
            if key in ("vad", "gating", "mood", "turn_detection") and isinstance(value, dict):
                merged[key] = {**merged[key], **value}
            else:
                merged[key] = value
        try:
            return SessionConfig.model_validate(merged)
        except ValidationError as exc:
            raise InvalidConfigError(validation_problems(exc, "config")) from None
