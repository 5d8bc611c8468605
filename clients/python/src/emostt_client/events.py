"""Typed server events: one frozen dataclass per event type of docs/protocol.md.

``parse_event`` never raises on what a newer server may send: an unknown ``type``, or a known
type whose fields no longer parse, becomes ``Unknown`` with the message as received; unknown
fields are ignored (every event keeps the whole message in ``raw``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "ConfigUpdated",
    "EagerEndOfTurn",
    "EmotionChanged",
    "Error",
    "Event",
    "Final",
    "Label",
    "Partial",
    "Ready",
    "Reconnected",
    "ServerEvent",
    "SpeechStarted",
    "Timings",
    "TurnResumed",
    "Unknown",
    "Word",
    "parse_event",
    "parse_message",
]


@dataclass(frozen=True)
class Label:
    """A probability distribution over one class of labels; ``label`` is its most likely entry."""

    label: str
    scores: Mapping[str, float]

    @property
    def score(self) -> float:
        """The probability of ``label`` (0.0 when the server sent no scores)."""
        return float(self.scores.get(self.label, 0.0))


@dataclass(frozen=True)
class Word:
    word: str
    start_ms: int
    end_ms: int
    confidence: float


@dataclass(frozen=True)
class Timings:
    """Times on the session's audio clock (ms of audio since the session opened), and the
    server's latency from the end of the utterance to the final being sent."""

    audio_start_ms: int
    audio_end_ms: int
    duration_ms: int | None
    latency_ms: float | None


@dataclass(frozen=True)
class Ready:
    """The session is open. Sent first on every connection (again after a reconnect)."""

    device_id: str
    sample_rate: int
    model_name: str | None
    model_revision: str | None
    config: Mapping[str, Any]
    session_id: str
    seq: int
    raw: Mapping[str, Any] = field(repr=False, compare=False)


@dataclass(frozen=True)
class ConfigUpdated:
    """The effective session config after a ``configure()``."""

    config: Mapping[str, Any]
    session_id: str
    seq: int
    raw: Mapping[str, Any] = field(repr=False, compare=False)


@dataclass(frozen=True)
class SpeechStarted:
    utterance_id: str
    audio_start_ms: int
    session_id: str
    seq: int
    raw: Mapping[str, Any] = field(repr=False, compare=False)


@dataclass(frozen=True)
class Partial:
    utterance_id: str
    text: str
    audio_start_ms: int
    audio_end_ms: int
    session_id: str
    seq: int
    raw: Mapping[str, Any] = field(repr=False, compare=False)


@dataclass(frozen=True)
class Final:
    """The result of one utterance: exactly one per ``SpeechStarted`` (or one ``Error``).

    ``end_of_turn_confidence``: with semantic turns (``turn_detection``), the turn model's
    P(turn complete) at the turn's end; None when the model did not run for this utterance.
    ``keyterms_matched``: with keyterms set (``keyterms``), the session's keyterms found in
    ``text``, in order (empty when none was); None when the session has no keyterms."""

    utterance_id: str
    text: str
    confidence: float
    emotion: Label
    language: Label
    event: Label
    mood: Label | None
    words: tuple[Word, ...] | None
    gated: bool
    gate_reasons: tuple[str, ...]
    degraded: bool
    end_reason: str | None
    timings: Timings
    end_of_turn_confidence: float | None
    keyterms_matched: tuple[str, ...] | None
    session_id: str
    seq: int
    raw: Mapping[str, Any] = field(repr=False, compare=False)


@dataclass(frozen=True)
class EagerEndOfTurn:
    """The turn may be over (semantic turns): the turn model is fairly sure (``confidence``, its
    P(turn complete)), not sure enough to end it. An agent may start preparing its answer from
    ``text``; the utterance stays open: ``TurnResumed`` or its ``Final`` follows."""

    utterance_id: str
    text: str
    confidence: float
    session_id: str
    seq: int
    raw: Mapping[str, Any] = field(repr=False, compare=False)


@dataclass(frozen=True)
class TurnResumed:
    """Speech came back after an ``EagerEndOfTurn``: the turn goes on (drop what was prepared)."""

    utterance_id: str
    session_id: str
    seq: int
    raw: Mapping[str, Any] = field(repr=False, compare=False)


@dataclass(frozen=True)
class EmotionChanged:
    """The speaker's emotion moved from ``from_label`` to ``to_label`` with this utterance."""

    from_label: str | None
    to_label: str
    utterance_id: str | None
    scores: Mapping[str, float]
    session_id: str
    seq: int
    raw: Mapping[str, Any] = field(repr=False, compare=False)


@dataclass(frozen=True)
class Error:
    """An error event; ``utterance_id`` is set when it ends one utterance instead of a final."""

    code: str
    message: str
    retryable: bool
    utterance_id: str | None
    session_id: str
    seq: int
    raw: Mapping[str, Any] = field(repr=False, compare=False)


@dataclass(frozen=True)
class Unknown:
    """An event this version of the SDK does not know (or could not read): kept as received."""

    type: str
    raw: Mapping[str, Any] = field(compare=False)


@dataclass(frozen=True)
class Reconnected:
    """Made by the client, not sent by the server: the connection dropped (``close_code``; 1006
    for a network loss) and a new session is open after ``attempt`` tries. Audio sent before the
    drop is not replayed: the utterances in ``lost_utterance_ids`` (started, no final yet) are
    gone, and utterance ids start again at ``u1`` in the new session."""

    attempt: int
    close_code: int
    lost_utterance_ids: tuple[str, ...]


ServerEvent = (
    Ready
    | ConfigUpdated
    | SpeechStarted
    | Partial
    | EagerEndOfTurn
    | TurnResumed
    | Final
    | EmotionChanged
    | Error
    | Unknown
)
Event = ServerEvent | Reconnected


def _label(value: Any) -> Label:
    scores = {str(k): float(v) for k, v in dict(value.get("scores") or {}).items()}
    return Label(str(value["label"]), scores)


def _words(value: Any) -> tuple[Word, ...] | None:
    if value is None:
        return None
    return tuple(
        Word(str(w["word"]), int(w["start_ms"]), int(w["end_ms"]), float(w["confidence"])) for w in value
    )


def _optional_float(value: Any) -> float | None:
    return None if value is None else float(value)


def _optional_int(value: Any) -> int | None:
    return None if value is None else int(value)


def _strings(value: Any) -> tuple[str, ...] | None:
    if value is None:
        return None
    if isinstance(value, (str, bytes)):
        raise TypeError("a list of strings was expected")
    return tuple(str(v) for v in value)


def _optional_str(value: Any) -> str | None:
    return None if value is None else str(value)


def _parse(kind: str, e: Mapping[str, Any], sid: str, seq: int) -> ServerEvent:
    raw = e
    if kind == "ready":
        model = e.get("model") or {}
        return Ready(
            str(e.get("device_id", "")),
            int(e["sample_rate"]),
            _optional_str(model.get("name")),
            _optional_str(model.get("revision")),
            dict(e.get("config") or {}),
            sid,
            seq,
            raw,
        )
    if kind == "config":
        return ConfigUpdated(dict(e.get("config") or {}), sid, seq, raw)
    if kind == "speech_started":
        return SpeechStarted(str(e["utterance_id"]), int(e["audio_start_ms"]), sid, seq, raw)
    if kind == "partial":
        start, end = int(e["audio_start_ms"]), int(e["audio_end_ms"])
        return Partial(str(e["utterance_id"]), str(e["text"]), start, end, sid, seq, raw)
    if kind == "final":
        mood = e.get("mood")
        return Final(
            utterance_id=str(e["utterance_id"]),
            text=str(e["text"]),
            confidence=float(e["confidence"]),
            emotion=_label(e["emotion"]),
            language=_label(e["language"]),
            event=_label(e["event"]),
            mood=_label(mood) if isinstance(mood, Mapping) and "label" in mood else None,
            words=_words(e.get("words")),
            gated=bool(e.get("gated", False)),
            gate_reasons=tuple(str(r) for r in e.get("gate_reasons") or ()),
            degraded=bool(e.get("degraded", False)),
            end_reason=_optional_str(e.get("end_reason")),
            timings=Timings(
                int(e["audio_start_ms"]),
                int(e["audio_end_ms"]),
                _optional_int(e.get("duration_ms")),
                _optional_float(e.get("latency_ms")),
            ),
            end_of_turn_confidence=_optional_float(e.get("end_of_turn_confidence")),
            keyterms_matched=_strings(e.get("keyterms_matched")),
            session_id=sid,
            seq=seq,
            raw=raw,
        )
    if kind == "eager_end_of_turn":
        utterance, text = str(e["utterance_id"]), str(e["text"])
        return EagerEndOfTurn(utterance, text, float(e["confidence"]), sid, seq, raw)
    if kind == "turn_resumed":
        return TurnResumed(str(e["utterance_id"]), sid, seq, raw)
    if kind == "emotion_changed":
        return EmotionChanged(
            _optional_str(e.get("from")),
            str(e["to"]),
            _optional_str(e.get("utterance_id")),
            {str(k): float(v) for k, v in dict(e.get("scores") or {}).items()},
            sid,
            seq,
            raw,
        )
    if kind == "error":
        return Error(
            str(e.get("code", "")),
            str(e.get("message", "")),
            bool(e.get("retryable", False)),
            _optional_str(e.get("utterance_id")),
            sid,
            seq,
            raw,
        )
    return Unknown(kind, raw)


def parse_event(message: Mapping[str, Any]) -> ServerEvent:
    """A server event (the decoded JSON object) as a typed event; never raises."""
    if not isinstance(message, Mapping):
        return Unknown("", {"value": message})
    kind = message.get("type")
    kind = kind if isinstance(kind, str) else ""
    try:
        return _parse(kind, message, str(message.get("session_id", "")), int(message.get("seq", 0)))
    except (KeyError, TypeError, ValueError, AttributeError):
        return Unknown(kind, message)


def parse_message(text: str | bytes) -> ServerEvent:
    """A WebSocket text message (or a Redis Streams ``event`` field) as a typed event; never raises."""
    try:
        decoded = json.loads(text)
    except ValueError:
        return Unknown("", {"text": text if isinstance(text, str) else text.decode("utf-8", "replace")})
    return parse_event(decoded)
