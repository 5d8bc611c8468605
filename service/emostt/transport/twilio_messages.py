"""Phone carriers' media-stream messages (Twilio Media Streams, Telnyx and Plivo media streaming):
the table that says where each carrier puts what, and pure parsing of their JSON messages.

All three send the same conversation over one WebSocket: an optional ``connected``, one ``start``
(the call, the stream, its audio format, custom parameters), ``media`` messages (base64 G.711 with
the track it came from), and ``stop`` when the call or the stream ends (``mark`` and ``dtmf`` too,
which carry no audio). They differ only in field names and encoding names, so one adapter
(``twilio_media.py``) serves them all from ``CARRIERS``. Shapes: Twilio's Media Streams docs and
Pipecat's serializers and runner (``pipecat/serializers/{twilio,telnyx,plivo}.py``,
``pipecat/runner/utils.py``). docs/phone.md says what is taken and what is not, and why.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from emostt.errors import ProtocolError
from emostt.vocabulary import DEVICE_ID, Encoding

TRACKS = ("inbound", "outbound")
# The custom parameter (Twilio <Parameter>, or the URL's query) that names what to transcribe.
TRACKS_PARAMETER = "tracks"
TRACK_CHOICES = {"inbound": ("inbound",), "outbound": ("outbound",), "both": TRACKS}
MAX_PARAMETER_CHARS = 256


@dataclass(frozen=True)
class Carrier:
    """Where one carrier's ``start`` message keeps each fact (paths from the message's root)."""

    name: str  # metric label, log field
    path: str  # the WebSocket route
    call_id: tuple[str, ...]
    stream_id: tuple[str, ...]
    media_format: tuple[str, ...]
    encoding_key: str
    rate_key: str
    encodings: Mapping[str, Encoding]  # the carrier's encoding names this server decodes
    tracks: tuple[str, ...] | None = None  # the track list, where the carrier sends one
    parameters: tuple[str, ...] | None = None  # custom parameters, where the carrier sends them
    signed: bool = False  # the handshake carries X-Twilio-Signature


TWILIO = Carrier(
    name="twilio",
    path="/twilio/media",
    call_id=("start", "callSid"),
    stream_id=("start", "streamSid"),
    media_format=("start", "mediaFormat"),
    encoding_key="encoding",
    rate_key="sampleRate",
    encodings={"audio/x-mulaw": "mulaw"},
    tracks=("start", "tracks"),
    parameters=("start", "customParameters"),
    signed=True,
)
TELNYX = Carrier(
    name="telnyx",
    path="/telnyx/media",
    call_id=("start", "call_control_id"),
    stream_id=("stream_id",),
    media_format=("start", "media_format"),
    encoding_key="encoding",
    rate_key="sample_rate",
    # G.722, Opus, AMR-WB and L16 are not taken (docs/phone.md).
    encodings={"PCMU": "mulaw", "PCMA": "alaw"},
)
PLIVO = Carrier(
    name="plivo",
    path="/plivo/media",
    call_id=("start", "callId"),
    stream_id=("start", "streamId"),
    media_format=("start", "mediaFormat"),
    encoding_key="encoding",
    rate_key="sampleRate",
    encodings={"audio/x-mulaw": "mulaw"},  # audio/x-l16 is not taken (docs/phone.md)
    tracks=("start", "tracks"),
)
CARRIERS = (TWILIO, TELNYX, PLIVO)
CARRIER_NAMES = tuple(c.name for c in CARRIERS)


class CallRefused(Exception):  # noqa: N818 - a refusal, with the reason it is counted under
    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason  # a REJECTION_REASONS label
        self.message = message


@dataclass(frozen=True)
class CallStart:
    call_id: str
    stream_id: str
    tracks: tuple[str, ...] | None  # what the carrier says it sends; None: not said
    parameters: dict[str, str]
    encoding: Encoding
    sample_rate: int


def parse_event(message: Mapping[str, Any]) -> dict[str, Any]:
    """One received WebSocket message (ASGI) to a carrier event: a JSON object in a text frame."""
    text = message.get("text")
    if text is None:
        raise ProtocolError("media streams send JSON text frames")
    try:
        event = orjson.loads(text)
    except orjson.JSONDecodeError:
        raise ProtocolError("a message is not valid JSON") from None
    if not isinstance(event, dict) or not isinstance(event.get("event"), str):
        raise ProtocolError("a message is not a JSON object with an event name")
    return event


def media_chunk(event: Mapping[str, Any]) -> tuple[str, bytes]:
    """A ``media`` event's track (``inbound`` when unnamed) and its audio bytes."""
    media = event.get("media")
    if not isinstance(media, dict) or not isinstance(media.get("payload"), str):
        raise ProtocolError("a media message has no media.payload")
    track = media.get("track", "inbound")
    if not isinstance(track, str):
        raise ProtocolError("media.track is not a string")
    try:
        audio = base64.b64decode(media["payload"], validate=True)
    except (ValueError, binascii.Error):
        raise ProtocolError("media.payload is not valid base64") from None
    return track.removesuffix("_track"), audio


def parse_start(carrier: Carrier, event: Mapping[str, Any]) -> CallStart:
    """A ``start`` event as the call it opens; ``CallRefused`` when it lacks what a call needs or
    its audio is in a format this server does not decode."""
    call_id = _at(event, carrier.call_id)
    stream_id = _at(event, carrier.stream_id)
    if not isinstance(call_id, str) or not call_id:
        raise CallRefused("invalid_config", f"the start message has no {'.'.join(carrier.call_id)}")
    tracks = _at(event, carrier.tracks) if carrier.tracks else None
    listed = None
    if isinstance(tracks, list):
        listed = tuple(t.removesuffix("_track") for t in tracks if isinstance(t, str))
    raw_parameters = _at(event, carrier.parameters) if carrier.parameters else None
    parameters = {
        str(k): v
        for k, v in (raw_parameters.items() if isinstance(raw_parameters, dict) else ())
        if isinstance(v, str) and len(v) <= MAX_PARAMETER_CHARS
    }
    media_format = _at(event, carrier.media_format)
    default_encoding = next(iter(carrier.encodings))
    if not isinstance(media_format, dict):
        media_format = {carrier.encoding_key: default_encoding, carrier.rate_key: 8000}
    name = media_format.get(carrier.encoding_key, default_encoding)
    encoding = carrier.encodings.get(name) if isinstance(name, str) else None
    if encoding is None:
        taken = ", ".join(carrier.encodings)
        raise CallRefused(
            "invalid_config", f"the stream's encoding {str(name)[:40]!r} is not taken ({taken})"
        )
    rate = media_format.get(carrier.rate_key, 8000)
    try:
        sample_rate = int(rate)
    except (TypeError, ValueError):
        raise CallRefused("invalid_config", "the stream's sample rate is not a number") from None
    if media_format.get("channels", 1) not in (1, "1", None):
        raise CallRefused("invalid_config", "the stream must be mono")
    return CallStart(
        call_id=call_id,
        stream_id=stream_id if isinstance(stream_id, str) else "",
        tracks=listed,
        parameters=parameters,
        encoding=encoding,
        sample_rate=sample_rate,
    )


def parameter(start: CallStart, query: Mapping[str, str], name: str) -> str | None:
    """A custom parameter of the call (Twilio ``<Parameter>``), else the stream URL's query
    (Telnyx and Plivo keep a query string; Twilio's ``<Stream url>`` takes none)."""
    value = start.parameters.get(name)
    return value if value is not None else query.get(name)


def call_device_id(start: CallStart, requested: str | None) -> str:
    """The device a call's results belong to: the one asked for (checked like any device id, so
    a bad one is refused rather than silently renamed), else ``call-<call id>``."""
    if requested is not None:
        if not DEVICE_ID.fullmatch(requested):
            raise CallRefused("invalid_device_id", "the device_id parameter is not a valid device id")
        return requested
    device_id = f"call-{start.call_id}"
    if DEVICE_ID.fullmatch(device_id) and len(device_id) <= 64 - len(":outbound"):
        return device_id
    # A call id that is not a device id (Telnyx's can hold '=' or be long): a stable digest of it.
    return "call-" + hashlib.sha256(start.call_id.encode()).hexdigest()[:32]


def transcribed_tracks(start: CallStart, requested: str | None) -> tuple[str, ...]:
    """The tracks to transcribe, one session each: ``inbound`` (the caller) unless ``tracks`` asks
    for ``outbound`` or ``both``, and only those the carrier says it sends."""
    choice = TRACK_CHOICES.get(requested or "inbound")
    if choice is None:
        raise CallRefused("invalid_config", f"{TRACKS_PARAMETER} must be one of {', '.join(TRACK_CHOICES)}")
    if start.tracks is not None:
        sent = tuple(t for t in choice if t in start.tracks)
        if not sent:
            raise CallRefused("invalid_config", f"the stream carries no {requested} track")
        return sent
    return choice


def track_device_ids(device_id: str, tracks: tuple[str, ...]) -> dict[str, str]:
    """One track: the call's device id; two: ``<device_id>:inbound`` and ``<device_id>:outbound``."""
    if len(tracks) == 1:
        return {tracks[0]: device_id}
    ids = {track: f"{device_id}:{track}" for track in tracks}
    if not all(DEVICE_ID.fullmatch(i) for i in ids.values()):
        raise CallRefused("invalid_device_id", "device_id is too long to name both tracks (':outbound')")
    return ids


def _at(event: Mapping[str, Any], path: tuple[str, ...]) -> Any:
    node: Any = event
    for key in path:
        if not isinstance(node, dict):
            return None
        node = node.get(key)
    return node
