"""Client messages (see docs/protocol.md) as session commands. Pure parsing.

The session's configuration schema is ``emostt.vocabulary.session_config``."""

from __future__ import annotations

import base64
import binascii
import time
from dataclasses import dataclass, field
from typing import Any, Literal, cast, get_args

import orjson

from emostt.errors import ProtocolError, UnknownMessageError


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
