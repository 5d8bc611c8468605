"""Facts of the wire and the model that every layer shares, each defined once here.

``labels`` holds the label vocabularies (languages, emotions, gate reasons, error codes) and
``session_config`` the schema of a session's configuration. Nothing in this package imports
from the rest of emostt: it sits below every layer (docs/architecture.md),
so transports, sessions, metrics, settings and docs all read the same table.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

# The rate the model (SenseVoice's fbank front end) and the VAD run at; other rates are resampled.
SAMPLE_RATE = 16_000
# Rates a stream or file may arrive at (resampled to SAMPLE_RATE at the edge).
SUPPORTED_INPUT_RATES = (8_000, 16_000, 22_050, 24_000, 32_000, 44_100, 48_000)
# How a stream's bytes encode its samples: PCM16 little-endian, or G.711 µ-law / A-law (phone
# audio, one byte a sample, usually at 8 kHz).
Encoding = Literal["pcm16", "mulaw", "alaw"]
ENCODINGS: tuple[Encoding, ...] = ("pcm16", "mulaw", "alaw")
BYTES_PER_SAMPLE: dict[str, int] = {"pcm16": 2, "mulaw": 1, "alaw": 1}
# Silero VAD's frame at 16 kHz: the unit of endpointing.
VAD_FRAME_SAMPLES = 512
VAD_FRAME_MS = VAD_FRAME_SAMPLES * 1000 // SAMPLE_RATE  # 32

# A device id in a URL path (/ws/stt/<device_id>), an auth-token binding and a Redis Stream key.
DEVICE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$")
DEVICE_ID_RULE = "1-64 characters of A-Z a-z 0-9 . _ : - (starting with a letter or digit)"

# What `model` loads when it is not set: SenseVoiceSmall from ModelScope.
DEFAULT_MODEL = "iic/SenseVoiceSmall"

Hub = Literal["ms", "hf"]
Precision = Literal["auto", "fp32", "int8", "fp16", "bf16"]
Backend = Literal["auto", "torch", "onnx"]


@dataclass(frozen=True)
class CloseCode:
    """A WebSocket close code the server sends, what it means, and whether a client should retry."""

    code: int
    name: str
    meaning: str
    retryable: bool


CLOSE_NORMAL = CloseCode(
    1000,
    "normal",
    "the session ended: the client closed it, or a session limit (idle_timeout, session_too_long) "
    "ended it after its finals",
    False,
)
CLOSE_POLICY = CloseCode(
    1008, "policy", "refused or closed by policy: auth, origin, device id, rate limits", False
)
CLOSE_TOO_BIG = CloseCode(1009, "too_big", "a message was larger than max_message_bytes", False)
CLOSE_INTERNAL = CloseCode(1011, "internal", "an internal error ended the session", True)
CLOSE_RESTART = CloseCode(1012, "restart", "the server is restarting (drain): reconnect", True)
CLOSE_OVERLOADED = CloseCode(
    1013, "overloaded", "the server is not ready, full or overloaded: try later or elsewhere", True
)

CLOSE_CODES = (CLOSE_NORMAL, CLOSE_POLICY, CLOSE_TOO_BIG, CLOSE_INTERNAL, CLOSE_RESTART, CLOSE_OVERLOADED)
CLOSE_BY_CODE = {c.code: c for c in CLOSE_CODES}
# The codes a connection is refused or ended with by policy (a metric label set).
REFUSAL_CLOSE_CODES = tuple(
    str(c.code) for c in (CLOSE_POLICY, CLOSE_TOO_BIG, CLOSE_RESTART, CLOSE_OVERLOADED)
)
