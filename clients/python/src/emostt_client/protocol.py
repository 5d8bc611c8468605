"""The protocol core every emostt client shares (docs/protocol.md): close codes and the one rule
for reconnecting after them, the device id rule, the endpoint URL, the languages, the sample
rates, the typed events (re-exported from ``emostt_client.events``), the turn-detection
setting (re-exported from ``emostt_client.turns``) and the keyterms' bounds (re-exported from
``emostt_client.keyterms``).

Standard library only, and nothing here opens a connection, so that the SDK, the LiveKit plugin
(``livekit-plugins-emostt``) and the Pipecat service (``pipecat-emostt``) all import their rules
from here instead of keeping copies. The web client (clients/web/emostt.js) cannot import Python:
tests/clients/test_protocol_core.py checks its constants against this module, and this module
against the server's own tables (``emostt.vocabulary``).

Reconnecting, the one policy:

- a close the client asked for (it sent ``close``, or is shutting down) is never followed by a
  new connection, whatever its code;
- 1001 going away, 1006 no close frame (a network loss, a killed server), 1011 internal error,
  1012 restart (a drain) and 1013 overloaded / at the connection limit / not ready are retried,
  with exponential backoff and jitter so that devices dropped together come back spread out;
- 1008 (policy: auth, origin, device id, rate limits, a rejected config), 1009 (too big), 1003,
  1007, 4xxx and any other code are final: the same request would be refused the same way;
- 1000 the client did not ask for is the server ending the session at a limit, after its finals
  and an ``error`` event (``idle_timeout``, ``session_too_long``). It is final for a stream the
  caller opened for one session (the SDK's ``Stream``, the web client): the caller sees the
  error event and decides. The one exception: a stream that outlives sessions
  (``outlives_sessions=True``: LiveKit's ``SpeechStream``, Pipecat's ``EmosttSTTService``) lives as
  long as the agent or pipeline that owns it, which still wants transcripts after emostt's
  ``max_session_s``; there the limit ends a session, not the stream, and a new one is opened.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Literal
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

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
from emostt_client.keyterms import MAX_KEYTERM_CHARS, MAX_KEYTERMS, keyterms_list
from emostt_client.turns import (
    Eagerness,
    TurnDetection,
    TurnDetectionLike,
    config_fields,
    is_semantic,
    turn_detection_config,
)

__all__ = [
    "AUTH_ERROR_CODES",
    "CLOSE_ABNORMAL",
    "CLOSE_GOING_AWAY",
    "CLOSE_INTERNAL",
    "CLOSE_NORMAL",
    "CLOSE_OVERLOADED",
    "CLOSE_POLICY",
    "CLOSE_RESTART",
    "CLOSE_TOO_BIG",
    "CLOSING_ERROR_CODES",
    "DEVICE_ID",
    "DEVICE_ID_RULE",
    "LANGUAGE_HINTS",
    "LANGUAGE_LABELS",
    "MAX_KEYTERMS",
    "MAX_KEYTERM_CHARS",
    "NO_SPEECH",
    "RETRYABLE_CLOSE_CODES",
    "SAMPLE_RATES",
    "SESSION_LIMIT_ERROR_CODES",
    "SPOKEN_LANGUAGES",
    "TURN_MODEL_UNAVAILABLE",
    "ConfigUpdated",
    "EagerEndOfTurn",
    "Eagerness",
    "EmotionChanged",
    "Error",
    "Event",
    "Final",
    "Label",
    "LanguageHint",
    "Partial",
    "Ready",
    "Reconnected",
    "ServerEvent",
    "SpeechStarted",
    "Timings",
    "TurnDetection",
    "TurnDetectionLike",
    "TurnResumed",
    "Unknown",
    "Word",
    "build_url",
    "check_device_id",
    "config_fields",
    "is_retryable_close",
    "is_semantic",
    "keyterms_list",
    "merge_config",
    "parse_event",
    "parse_message",
    "reconnects_after",
    "turn_detection_config",
]

# -- close codes --------------------------------------------------------------------------------

CLOSE_NORMAL = 1000
CLOSE_GOING_AWAY = 1001  # a proxy or the server's host going down
CLOSE_ABNORMAL = 1006  # never sent: no close frame came (a network loss, a killed server)
CLOSE_POLICY = 1008
CLOSE_TOO_BIG = 1009
CLOSE_INTERNAL = 1011
CLOSE_RESTART = 1012
CLOSE_OVERLOADED = 1013

# Closes after which another connection may work (see the module docstring for the whole rule).
RETRYABLE_CLOSE_CODES = frozenset(
    {CLOSE_GOING_AWAY, CLOSE_ABNORMAL, CLOSE_INTERNAL, CLOSE_RESTART, CLOSE_OVERLOADED}
)


def is_retryable_close(code: int) -> bool:
    """Whether another connection may succeed after a close (or refusal) with ``code`` that the
    client did not ask for. 1000 is not: see ``reconnects_after`` for the streams that retry it."""
    return code in RETRYABLE_CLOSE_CODES


def reconnects_after(code: int, *, requested: bool, outlives_sessions: bool = False) -> bool:
    """The one reconnect rule: whether a client opens a new session after its connection closed
    with ``code`` (``CLOSE_ABNORMAL`` when no close frame came).

    ``requested``: the client asked for the end (sent ``close``, or is shutting down): never.
    ``outlives_sessions``: the stream belongs to something that outlives one emostt session (an
    agent, a pipeline), which makes a 1000 it did not ask for (a session limit) retryable too.
    """
    if requested:
        return False
    if code == CLOSE_NORMAL:
        return outlives_sessions
    return is_retryable_close(code)


# -- error codes a client acts on ---------------------------------------------------------------

# A 1008 refusal with one of these: these credentials, this origin or this device may not connect.
AUTH_ERROR_CODES = frozenset({"unauthorized", "origin_not_allowed", "invalid_device_id"})
# The server ends the session with 1000 after these (and after the session's finals).
SESSION_LIMIT_ERROR_CODES = frozenset({"idle_timeout", "session_too_long"})
# Session errors the server's close follows at once: the close code, not the error, says whether
# to reconnect (1000 after a limit, 1008 after rate_limited / too_fast / stalled_reader, 1012
# after shutting_down at the end of a drain).
CLOSING_ERROR_CODES = SESSION_LIMIT_ERROR_CODES | {
    "rate_limited",
    "too_fast",
    "stalled_reader",
    "shutting_down",
}

# A session asked for semantic turns (``turn_detection``) on a server without a turn model: not
# fatal, no ``utterance_id``; the session goes on with silence turns (``{"type": "silence"}``).
TURN_MODEL_UNAVAILABLE = "turn_model_unavailable"

# -- the device id and the endpoint -------------------------------------------------------------

# The id a session streams as: a URL path segment, an auth-token binding and a Redis Stream key.
DEVICE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$")
DEVICE_ID_RULE = "1-64 characters of A-Z a-z 0-9 . _ : - (starting with a letter or digit)"


def check_device_id(device_id: str) -> str:
    """``device_id`` if the server takes it; else ``ValueError`` (the server would refuse it with
    1008 ``invalid_device_id``, on every attempt)."""
    if not DEVICE_ID.fullmatch(device_id):
        raise ValueError(f"invalid device_id {device_id!r}: {DEVICE_ID_RULE}")
    return device_id


def build_url(url: str, device_id: str, sample_rate: int) -> str:
    """``ws(s)://host[:port][/prefix]`` (http(s) is accepted too) -> the session's endpoint URL,
    ``.../ws/stt/<device_id>?sample_rate=N``."""
    check_device_id(device_id)
    parts = urlsplit(url)
    scheme = {"http": "ws", "https": "wss"}.get(parts.scheme, parts.scheme)
    if scheme not in ("ws", "wss") or not parts.netloc:
        raise ValueError(f"not a ws://, wss://, http:// or https:// URL: {url!r}")
    path = parts.path.rstrip("/")
    if not path.endswith("/ws/stt"):
        path += "/ws/stt"
    query = [(k, v) for k, v in parse_qsl(parts.query) if k != "sample_rate"]
    query.append(("sample_rate", str(sample_rate)))
    return urlunsplit((scheme, parts.netloc, f"{path}/{quote(device_id, safe='')}", urlencode(query), ""))


def merge_config(config: dict[str, Any], fields: Mapping[str, Any]) -> None:
    """Apply a ``config`` message's ``fields`` to ``config`` as the server applies them to a
    session's config: mappings (``vad``, ``gating``, ``mood``, ``turn_detection``) field by field,
    the rest replaced."""
    for key, value in fields.items():
        if isinstance(value, Mapping) and isinstance(config.get(key), dict):
            config[key].update(value)
        else:
            config[key] = dict(value) if isinstance(value, Mapping) else value


# -- languages and audio ------------------------------------------------------------------------

# SenseVoice's languages: a session's ``language`` hint and a final's ``language.label``.
SPOKEN_LANGUAGES: tuple[str, ...] = ("zh", "en", "yue", "ja", "ko")
NO_SPEECH = "nospeech"  # the language label of a final with no speech in it
LANGUAGE_LABELS: tuple[str, ...] = (*SPOKEN_LANGUAGES, NO_SPEECH)
# The hints a client offers: ``auto`` (the model detects) or a spoken language. The server takes
# ``nospeech`` as a hint too, which no client has a use for.
LanguageHint = Literal["auto", "zh", "en", "yue", "ja", "ko"]
LANGUAGE_HINTS: tuple[LanguageHint, ...] = ("auto", "zh", "en", "yue", "ja", "ko")

# ``?sample_rate=`` values the server takes (it resamples them to 16 kHz); others are resampled
# by the client.
SAMPLE_RATES: tuple[int, ...] = (8000, 16000, 22050, 24000, 32000, 44100, 48000)
