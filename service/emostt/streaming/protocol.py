"""Client messages and per-session configuration (see docs/protocol.md). Pure parsing."""

from __future__ import annotations

import base64
import binascii
import time
from dataclasses import dataclass, field
from typing import Any, Literal, cast, get_args

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from emostt.audio import SUPPORTED_INPUT_RATES
from emostt.errors import EmosttError
from emostt.inference.rich_tokens import LANGUAGE_HINTS
from emostt.policy.gating import GatingConfig
from emostt.streaming.mood import MoodConfig
from emostt.streaming.segmenter import EndpointConfig


class ProtocolError(EmosttError):
    code = "invalid_message"


class UnknownMessageError(ProtocolError):
    code = "unknown_message_type"


class InvalidConfigError(ProtocolError):
    code = "invalid_config"


class SessionConfig(BaseModel):
    """Everything a client may set with a ``config`` message (or, for sample_rate, the URL)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    language: str = "auto"
    use_itn: bool = True
    interim_results: bool = True
    partial_interval_ms: int = Field(600, ge=100, le=10_000)
    word_timestamps: bool = False
    known_emotion_only: bool = False
    sample_rate: int = 16_000
    vad: EndpointConfig = Field(default_factory=EndpointConfig)
    gating: GatingConfig = Field(default_factory=GatingConfig)
    mood: MoodConfig = Field(default_factory=MoodConfig)

    @model_validator(mode="after")
    def _check_choices(self) -> SessionConfig:
        if self.language not in LANGUAGE_HINTS:
            raise ValueError(f"language must be one of {', '.join(LANGUAGE_HINTS)}")
        if self.sample_rate not in SUPPORTED_INPUT_RATES:
            raise ValueError(f"sample_rate must be one of {', '.join(map(str, SUPPORTED_INPUT_RATES))}")
        return self

    def updated(self, changes: dict[str, Any]) -> SessionConfig:
        """A new config with ``changes`` merged in (nested vad/gating/mood merge field by field)."""
        merged = self.model_dump()
        for key, value in changes.items():
            if key in ("vad", "gating", "mood") and isinstance(value, dict):
                merged[key] = {**merged[key], **value}
            else:
                merged[key] = value
        try:
            return SessionConfig.model_validate(merged)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(map(str, e['loc'])) or 'config'}: {e['msg']}" for e in exc.errors()
            )
            raise InvalidConfigError(problems) from None


@dataclass(frozen=True)
class Audio:
    pcm: bytes
    # When the message was received (perf_counter): what the speech-end -> final latency counts
    # from, so time spent in the session's receive queue is part of it.
    received_at: float = field(default_factory=time.perf_counter, compare=False, repr=False)


@dataclass(frozen=True)
class Configure:
    changes: dict[str, Any]


ControlKind = Literal["finalize", "keepalive", "close"]
CONTROL_KINDS: tuple[str, ...] = get_args(ControlKind)


@dataclass(frozen=True)
class Control:
    kind: ControlKind


Command = Audio | Configure | Control


def parse_text(text: str) -> Command:
    """A JSON text frame to a command. Raises ``ProtocolError`` with a message for the client."""
    try:
        message = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise ProtocolError(f"text frames must be JSON objects: {exc}") from None
    if not isinstance(message, dict):
        raise ProtocolError("text frames must be JSON objects")
    kind = message.get("type")
    if kind is not None and not isinstance(kind, str):
        raise ProtocolError("type must be a string")
    if kind is None and "audio" in message:  # device firmware format: {"audio": "<hex>"}
        return Audio(_decode(message["audio"], "hex"))
    if kind == "audio":
        return Audio(_decode(message.get("data"), "base64"))
    if kind == "config":
        return Configure({k: v for k, v in message.items() if k != "type"})
    if kind in CONTROL_KINDS:
        return Control(cast(ControlKind, kind))
    raise UnknownMessageError(
        f"unknown message type {kind if kind is None else kind[:40]!r}; "
        "expected config, audio, finalize, keepalive or close"
    )


def _decode(payload: object, encoding: str) -> bytes:
    if not isinstance(payload, str):
        raise ProtocolError(f"audio payload must be a {encoding} string")
    try:
        return bytes.fromhex(payload) if encoding == "hex" else base64.b64decode(payload, validate=True)
    except (ValueError, binascii.Error) as exc:
        raise ProtocolError(f"audio payload is not valid {encoding}: {exc}") from None
