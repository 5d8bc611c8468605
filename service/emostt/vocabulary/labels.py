"""The label vocabularies of results, errors and metrics, defined once.

Results name languages, emotions and events by these labels (the model's token pieces for
them live in ``inference/rich_tokens.py``, keyed by the same labels); metrics take their label
values from these fixed sets, so the series a server exports stay bounded.
"""

from __future__ import annotations

from typing import Literal, get_args

# Language hints a client may ask for ("auto": the model decides) and the labels results carry.
LANGUAGE_LABELS: tuple[str, ...] = ("zh", "en", "yue", "ja", "ko", "nospeech")
LANGUAGE_HINTS: tuple[str, ...] = ("auto", *LANGUAGE_LABELS)

EMOTION_LABELS: tuple[str, ...] = (
    "happy",
    "sad",
    "angry",
    "neutral",
    "fearful",
    "disgusted",
    "surprised",
    "unknown",
)
UNKNOWN_EMOTION = "unknown"
# The labels a mood ranges over: every emotion the model names except ``unknown``.
MOOD_LABELS: tuple[str, ...] = tuple(label for label in EMOTION_LABELS if label != UNKNOWN_EMOTION)

EVENT_LABELS: tuple[str, ...] = (
    "speech",
    "bgm",
    "applause",
    "laughter",
    "cry",
    "sneeze",
    "breath",
    "cough",
    "sing",
    "speech_noise",
    "gbg",
    "event_unk",
)
# Speech over music is still speech (SenseVoice labels it BGM), so bgm is not here.
NON_SPEECH_EVENTS = frozenset(
    {"applause", "laughter", "cry", "sneeze", "breath", "cough", "gbg", "event_unk"}
)
# Every reason a final's ``gate_reasons`` can give (a metric label: the set stays fixed and small).
GATE_REASONS: tuple[str, ...] = (
    "empty_text",
    "low_confidence",
    "low_emotion_score",
    "low_language_score",
    "nospeech",
    *sorted(f"event_{event}" for event in NON_SPEECH_EVENTS),
)

# The ``code`` of every error event (docs/protocol.md); stable, so clients can switch on them.
ERROR_CODES = frozenset(
    {
        # handshake (the connection is then closed)
        "unauthorized",
        "invalid_device_id",
        "origin_not_allowed",
        "invalid_config",
        "too_many_connections",
        "overloaded",
        "not_ready",
        # a message (the session continues)
        "invalid_message",
        "unknown_message_type",
        # an utterance (the session continues)
        "inference_failed",
        "out_of_memory",
        "shutting_down",
        "invalid_audio",
        "vad_failed",
        # a session asked for semantic turns on a server without a turn model (silence turns go on)
        "turn_model_unavailable",
        "internal_error",
        # the session is closed after the event
        "idle_timeout",
        "session_too_long",
        "rate_limited",
        "too_fast",
        "stalled_reader",
    }
)

# The kinds of work the batcher runs ("file": segments of uploaded files, the REST endpoint).
JobKind = Literal["final", "partial", "file"]
BATCH_KINDS: tuple[JobKind, ...] = get_args(JobKind)

# Why a connection was refused, or an open session closed by a limit (the error code it gets).
REJECTION_REASONS: tuple[str, ...] = (
    # at the handshake
    "bad_signature",  # a phone stream without a valid X-Twilio-Signature (docs/phone.md)
    "invalid_device_id",
    "origin_not_allowed",
    "unauthorized",
    "invalid_config",
    "not_ready",
    "too_many_connections",
    "overloaded",
    # an open session closed by a limit
    "message_too_big",
    "rate_limited",
    "too_fast",
    "stalled_reader",
)
# Why a session ended: also the reason in its close frame (docs/protocol.md).
SESSION_END_REASONS: tuple[str, ...] = (
    "closed",
    "drained",
    "client_gone",
    "internal_error",
    "shutting_down",
    "idle_timeout",
    "session_too_long",
    "message_too_big",
    "rate_limited",
    "too_fast",
    "stalled_reader",
)
# The phone carriers whose media streams the server takes (transport/twilio_messages.py).
PHONE_CARRIERS: tuple[str, ...] = ("twilio", "telnyx", "plivo")
