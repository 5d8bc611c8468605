"""Server -> client events: the outbound schema in one place (docs/protocol.md mirrors it).

Every builder returns the event body; the transport adds ``session_id`` and ``seq``. Error
codes are stable and listed in ``emostt.vocabulary.labels.ERROR_CODES``; an error's
``message`` is safe to show to a client (never exception text: details go to the log with the session id).
"""

from __future__ import annotations

from typing import Any

from emostt.inference.engine import ModelInfo, TranscriptionResult
from emostt.streaming.mood import EmotionChange, Mood
from emostt.vocabulary.labels import ERROR_CODES

Event = dict[str, Any]


def ready(device_id: str, model: ModelInfo | None, sample_rate: int, config: dict[str, Any]) -> Event:
    return {
        "type": "ready",
        "device_id": device_id,
        "model": {"name": model.name, "revision": model.revision} if model else None,
        "sample_rate": sample_rate,
        "config": config,
    }


def config_changed(config: dict[str, Any]) -> Event:
    return {"type": "config", "config": config}


def speech_started(utterance_id: str, audio_start_ms: int) -> Event:
    return {"type": "speech_started", "utterance_id": utterance_id, "audio_start_ms": audio_start_ms}


def speech_ended(utterance_id: str, audio_end_ms: int, end_reason: str) -> Event:
    """The endpoint: the utterance's audio ends here and its final (or error) follows. Sent only by
    sessions that ask for it (OpenAI Realtime's speech_stopped and committed); not on /ws/stt."""
    return {
        "type": "speech_ended",
        "utterance_id": utterance_id,
        "audio_end_ms": audio_end_ms,
        "end_reason": end_reason,
    }


def partial(utterance_id: str, text: str, audio_start_ms: int, audio_end_ms: int) -> Event:
    return {
        "type": "partial",
        "utterance_id": utterance_id,
        "text": text,
        "audio_start_ms": audio_start_ms,
        "audio_end_ms": audio_end_ms,
    }


def final(
    utterance_id: str,
    result: TranscriptionResult,
    *,
    gate_reasons: list[str],
    degraded: bool,
    end_reason: str,
    audio_start_ms: int,
    audio_end_ms: int,
    latency_ms: float,
    mood: Mood | None = None,
    end_of_turn_confidence: float | None = None,
) -> Event:
    body = result.to_dict()
    body.pop("raw_text", None)
    event: Event = {
        "type": "final",
        "utterance_id": utterance_id,
        **body,
        "gated": bool(gate_reasons),
        "gate_reasons": gate_reasons,
        "degraded": degraded,
        "end_reason": end_reason,
        "audio_start_ms": audio_start_ms,
        "audio_end_ms": audio_end_ms,
        "latency_ms": round(latency_ms, 1),
        # P(turn complete) from the turn model at the turn's end; None when it did not run.
        "end_of_turn_confidence": (
            None if end_of_turn_confidence is None else round(end_of_turn_confidence, 4)
        ),
    }
    if mood is not None:  # absent when the session turned mood off
        event["mood"] = {"label": mood.label, "scores": dict(mood.scores)}
    return event


def eager_end_of_turn(utterance_id: str, text: str, confidence: float) -> Event:
    """The turn may be over (the turn model is fairly sure, not sure enough to end it): an agent
    may start preparing its answer from ``text``; ``turn_resumed`` or the final follows."""
    return {
        "type": "eager_end_of_turn",
        "utterance_id": utterance_id,
        "text": text,
        "confidence": round(confidence, 4),
    }


def turn_resumed(utterance_id: str) -> Event:
    """Speech came back after an ``eager_end_of_turn``: the turn goes on."""
    return {"type": "turn_resumed", "utterance_id": utterance_id}


def emotion_changed(change: EmotionChange, utterance_id: str) -> Event:
    """The session's mood changed label with ``utterance_id``'s final (sent right after it)."""
    return {
        "type": "emotion_changed",
        "from": change.from_label,
        "to": change.to_label,
        "utterance_id": utterance_id,
        "scores": dict(change.scores),
    }


def error(code: str, message: str, retryable: bool, utterance_id: str | None = None) -> Event:
    assert code in ERROR_CODES, f"undocumented error code {code!r}"
    event: Event = {"type": "error", "code": code, "message": message, "retryable": retryable}
    if utterance_id is not None:
        event["utterance_id"] = utterance_id
    return event
