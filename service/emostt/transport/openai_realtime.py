"""``/v1/realtime?intent=transcription``: OpenAI's Realtime transcription protocol over the same
session core as ``/ws/stt`` (docs/openai.md, "Realtime").

Thin, like every transport: the handshake (OpenAI's key forms, the device id), client events to
session commands (``decode``; commit, clear and session updates run as ``Step``s, in order with
the audio), session events to server events (``realtime_events.Translator``). Limits, admission,
drain, metrics and results publishing are ``/ws/stt``'s own (transport/ws.py ``run_session``).

Concurrency: event loop only. The receive loop decodes; the session's consumer runs the steps;
everything sent goes through the connection's send lock, where the translator runs, so the
translator's state and the wire order always agree.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Mapping
from functools import partial
from typing import Any

import orjson
from fastapi import WebSocket

from emostt.errors import InvalidConfigError, ProtocolError
from emostt.observability import metrics
from emostt.streaming.protocol import Audio, Configure, Control
from emostt.streaming.session import Session
from emostt.transport.auth import (
    DEVICE_ID,
    SUBPROTOCOL,
    bound_device,
    check_handshake,
    offered_subprotocols,
    presented_token,
)
from emostt.transport.connection import Connection, Inbound, Step
from emostt.transport.realtime_config import (
    MAX_EVENT_ID_CHARS,
    OPENAI_RATE,
    TRANSCRIPTION_LIMITS,
    RealtimeRequestError,
    RealtimeView,
    parse_update,
)
from emostt.transport.realtime_events import Translator, WireEvent
from emostt.transport.runtime import run_session
from emostt.transport.state import AppState
from emostt.vocabulary import CLOSE_POLICY
from emostt.vocabulary.session_config import SessionConfig

# What OpenAI's browser clients offer: new WebSocket(url, ["realtime",
# "openai-insecure-api-key." + key, "openai-beta.realtime-v1"]); the server answers "realtime".
REALTIME_SUBPROTOCOL = "realtime"
KEY_SUBPROTOCOL_PREFIX = "openai-insecure-api-key."
BETA_SUBPROTOCOL = "openai-beta.realtime-v1"
CLIENT_EVENTS = (
    "session.update",
    "transcription_session.update",
    "input_audio_buffer.append",
    "input_audio_buffer.commit",
    "input_audio_buffer.clear",
)


def realtime_token(authorization: str | None, subprotocols: list[str], query_token: str | None) -> str | None:
    """``Authorization: Bearer`` (the SDKs, LiveKit, Pipecat), the ``openai-insecure-api-key.``
    subprotocol (browsers), or ``/ws/stt``'s ``bearer.`` subprotocol and ``?token=``."""
    if not (authorization and authorization.lower().startswith("bearer ")):
        for proto in subprotocols:
            if proto.startswith(KEY_SUBPROTOCOL_PREFIX):
                return proto[len(KEY_SUBPROTOCOL_PREFIX) :]
    return presented_token(authorization, subprotocols, query_token)


def realtime_device_id(
    requested: str | None, token: str | None, tokens: Mapping[Any, str], session_id: str
) -> str:
    """``?device_id=``; else the device the key is bound to; else ``realtime-<session_id>``."""
    if requested is not None:
        return requested
    bound = bound_device(token, tokens) if token is not None and tokens else None
    if bound is not None and bound != "*" and DEVICE_ID.fullmatch(bound):
        return bound
    return f"realtime-{session_id}"


class RealtimeConnection(Connection):
    protocol = "realtime"

    def __init__(self, websocket: WebSocket, state: AppState, *, beta: bool, model: str) -> None:
        super().__init__(websocket, "", state)
        self.default_language = SessionConfig.model_validate(state.settings.session_defaults).language
        view = RealtimeView(
            id=f"sess_{self.session_id}",
            beta=beta,
            transcription={"model": model, "language": None, "prompt": ""},
        )
        self.translator = Translator(self.session_id, view)

    def _subprotocol(self) -> str | None:
        offered = offered_subprotocols(self.ws.headers.get("sec-websocket-protocol"))
        for proto in (REALTIME_SUBPROTOCOL, SUBPROTOCOL):
            if proto in offered:
                return proto
        return None

    # -- client events -----------------------------------------------------------------------

    def decode(self, message: Mapping[str, Any]) -> Inbound:
        text = message.get("text")
        if text is None:
            raise RealtimeRequestError("send client events as JSON text frames", param=None)
        try:
            event = orjson.loads(text)
        except orjson.JSONDecodeError:
            raise RealtimeRequestError("the event is not valid JSON", openai_code="invalid_json") from None
        if not isinstance(event, dict):
            raise RealtimeRequestError("the event must be a JSON object", openai_code="invalid_json")
        event_id = event.get("event_id")
        if not isinstance(event_id, str) or len(event_id) > MAX_EVENT_ID_CHARS:
            # Not echoed: an error's event_id must not carry whatever a client put there.
            if isinstance(event_id, str):
                raise RealtimeRequestError(
                    f"event_id is longer than {MAX_EVENT_ID_CHARS} characters", param="event_id"
                )
            event_id = None
        try:
            return self._command(event, event_id)
        except RealtimeRequestError as exc:
            exc.event_id = event_id
            raise

    def _command(self, event: dict[str, Any], event_id: str | None) -> Inbound:
        kind = event.get("type")
        if kind == "input_audio_buffer.append":
            return Audio(_audio(event.get("audio")))
        if kind == "input_audio_buffer.commit":
            return Step(partial(self._commit, event_id))
        if kind == "input_audio_buffer.clear":
            return Step(self._clear)
        if kind in ("session.update", "transcription_session.update"):
            return Step(partial(self._update, event, event_id))
        shown = repr(kind[:60]) if isinstance(kind, str) else repr(kind)
        raise RealtimeRequestError(
            f"Invalid value: {shown}. This transcription server takes {', '.join(CLIENT_EVENTS)}",
            param="type",
            code="unknown_message_type",
        )

    async def _update(self, event: dict[str, Any], event_id: str | None, session: Session) -> None:
        try:
            update = parse_update(event, self.translator.view, session.config, self.default_language)
        except RealtimeRequestError as exc:
            exc.event_id = event_id
            await self.request_error(exc)
            return
        previous, self.translator.view = self.translator.view, update.view
        try:
            # Applies the config and emits `config`, which the translator answers with
            # session.updated (from the view just set).
            await session.handle(Configure(update.changes))
        except InvalidConfigError as exc:
            self.translator.view = previous
            # The one change a valid update can still be refused for: the rate, once audio came.
            param = "session.audio.input.format.rate" if "sample_rate" in update.changes else "session"
            await self.request_error(
                RealtimeRequestError(str(exc), param=param, code="invalid_config", event_id=event_id)
            )
            return
        session.set_manual_turns(update.manual_turns)

    async def _commit(self, event_id: str | None, session: Session) -> None:
        if session.open_utterance is None:
            await self.request_error(
                RealtimeRequestError(
                    "Error committing input audio buffer: it holds no audio"
                    + ("" if session.manual_turns else " with speech since the last turn"),
                    openai_code="input_audio_buffer_commit_empty",
                    event_id=event_id,
                )
            )
            return
        await session.handle(Control("finalize"))  # speech_ended: committed, then the transcript

    async def _clear(self, session: Session) -> None:
        end_ms = session.audio_ms
        dropped = session.discard()
        await self.send_events(lambda: self.translator.cleared(dropped, end_ms))

    # -- server events -----------------------------------------------------------------------

    def outbound(self, payload: dict[str, Any]) -> list[dict[str, Any]]:
        return self.translator.translate(payload)

    async def on_protocol_error(self, exc: ProtocolError) -> None:
        if not isinstance(exc, RealtimeRequestError):
            exc = RealtimeRequestError(str(exc), code=exc.code)
        await self.request_error(exc)

    async def request_error(self, exc: RealtimeRequestError) -> None:
        metrics.ERRORS.labels(exc.code).inc()
        await self.send_events(lambda: [self.translator.request_error(exc)])

    async def send_events(self, build: Callable[[], list[WireEvent]]) -> None:
        """Events that are not session events, built under the send lock (so the translator's
        state follows wire order) and neither numbered nor published."""
        async with self._send_lock:
            for message in build():
                await self._send_locked(message)


def _audio(payload: object) -> bytes:
    if not isinstance(payload, str):
        raise RealtimeRequestError("audio must be a base64 string", param="audio")
    try:
        return base64.b64decode(payload, validate=True)
    except (ValueError, binascii.Error):
        raise RealtimeRequestError("audio is not valid base64", param="audio") from None


async def realtime_endpoint(websocket: WebSocket) -> None:
    state: AppState = websocket.app.state.emostt
    settings = state.settings
    headers, query = websocket.headers, websocket.query_params
    offered = offered_subprotocols(headers.get("sec-websocket-protocol"))
    beta = "realtime=v1" in headers.get("openai-beta", "") or BETA_SUBPROTOCOL in offered
    model = query.get("model") or (state.model.name if state.model else "emostt")
    conn = RealtimeConnection(websocket, state, beta=beta, model=model)
    token = realtime_token(headers.get("authorization"), offered, query.get("token"))
    conn.device_id = realtime_device_id(query.get("device_id"), token, settings.auth_tokens, conn.session_id)
    rejection = check_handshake(
        conn.device_id, headers.get("origin"), token, settings.auth_tokens, settings.allowed_origins
    )
    if rejection is not None:
        await conn.reject(CLOSE_POLICY.code, rejection.reason, rejection.message)
        return
    if len(model) > TRANSCRIPTION_LIMITS["model"]:
        limit = TRANSCRIPTION_LIMITS["model"]
        await conn.reject(CLOSE_POLICY.code, "invalid_config", f"model is longer than {limit} characters")
        return
    if query.get("intent", "transcription") != "transcription":
        await conn.reject(
            CLOSE_POLICY.code,
            "invalid_config",
            "this server serves transcription sessions: ?intent=transcription",
        )
        return
    refusal = state.admission()
    if refusal is not None:
        await conn.reject(refusal.code, refusal.error, refusal.message)
        return
    # Every committed item gets a completed or failed event (clients wait for one), so gated
    # finals are sent, marked, rather than dropped.
    config = SessionConfig.model_validate({**settings.session_defaults, "sample_rate": OPENAI_RATE}).updated(
        {"gating": {"drop_gated": False}}
    )
    await run_session(conn, config, endpoint_events=True)
