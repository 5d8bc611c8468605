"""emostt-client: the Python SDK for emostt's streaming speech-to-text WebSocket (docs/protocol.md).

    async with emostt_client.connect("ws://localhost:8000", "robot-1", token=...) as stream:
        await stream.send_file("hello.wav")
        await stream.close()
        async for event in stream:
            ...

Blocking use: ``emostt_client.sync``. Command line: ``emostt-client file|mic ...``.
"""

from emostt_client.audio import read_audio, to_pcm16
from emostt_client.client import FAST, REALTIME, Pacing, Stream, connect
from emostt_client.errors import (
    AuthError,
    ConnectionFailedError,
    EmosttClientError,
    MissingDependencyError,
    ServerClosedError,
    StreamClosedError,
)
from emostt_client.events import (
    ConfigUpdated,
    EagerEndOfTurn,
    EmotionChanged,
    Error,
    Event,
    Final,
    Label,
    Partial,
    Ready,
    Reconnected,
    ServerEvent,
    SpeechStarted,
    Timings,
    TurnResumed,
    Unknown,
    Word,
    parse_event,
    parse_message,
)
from emostt_client.handshake import build_url
from emostt_client.reconnect import ReconnectPolicy
from emostt_client.turns import TurnDetection

__version__ = "0.1.0"

__all__ = [
    "FAST",
    "REALTIME",
    "AuthError",
    "ConfigUpdated",
    "ConnectionFailedError",
    "EagerEndOfTurn",
    "EmosttClientError",
    "EmotionChanged",
    "Error",
    "Event",
    "Final",
    "Label",
    "MissingDependencyError",
    "Pacing",
    "Partial",
    "Ready",
    "ReconnectPolicy",
    "Reconnected",
    "ServerClosedError",
    "ServerEvent",
    "SpeechStarted",
    "Stream",
    "StreamClosedError",
    "Timings",
    "TurnDetection",
    "TurnResumed",
    "Unknown",
    "Word",
    "build_url",
    "connect",
    "parse_event",
    "parse_message",
    "read_audio",
    "to_pcm16",
]
