"""``/twilio/media`` (Twilio Media Streams), ``/telnyx/media`` and ``/plivo/media``: the WebSocket a
carrier opens for a phone call (TwiML ``<Connect><Stream url=...>``), one session per transcribed
track, results to the device's Redis Stream and the server's logs and metrics (docs/phone.md).

Thin, like every transport. The handshake: Twilio's ``X-Twilio-Signature`` when a Twilio auth
token is configured (refused before the upgrade, HTTP 403, when it does not match), else the usual
token rules once ``start`` has said which device the call is for. Then each track's session runs
on ``run_session`` (limits, drain, metrics, finals before every close: ``/ws/stt``'s own) over a
Starlette WebSocket of its own, fed by the call's pump: media to its track, ``stop`` (or the call's
socket closing) to every track as a ``close``, so the call's last utterances still get finals.
Nothing is sent to the carrier: a session's events go to the results publisher and the logs.

Concurrency: event loop only; per call, one pump task and one ``run_session`` per track.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from fastapi import WebSocket
from pydantic import ValidationError
from starlette.types import Message, Scope
from twilio.request_validator import RequestValidator

from emostt.config import Settings
from emostt.errors import ProtocolError, validation_problems
from emostt.observability import metrics
from emostt.streaming import events
from emostt.transport.auth import check_handshake, offered_subprotocols, presented_token
from emostt.transport.connection import Connection
from emostt.transport.runtime import run_session
from emostt.transport.state import AppState
from emostt.transport.twilio_messages import (
    TRACKS_PARAMETER,
    CallRefused,
    CallStart,
    Carrier,
    call_device_id,
    media_chunk,
    parameter,
    parse_event,
    parse_start,
    track_device_ids,
    transcribed_tracks,
)
from emostt.vocabulary import CLOSE_NORMAL, CLOSE_POLICY, CLOSE_TOO_BIG
from emostt.vocabulary.session_config import SessionConfig

log = logging.getLogger(__name__)

CLOSE_COMMAND = '{"type": "close"}'  # what a track's session gets for the call's stop
# Carriers send start right after connecting; a socket without one holds no session slot, so it
# is not kept waiting for long.
START_TIMEOUT_S = 10.0


def phone_endpoint(carrier: Carrier) -> Callable[[WebSocket], Awaitable[None]]:
    """The WebSocket endpoint of one carrier (server/app.py registers one per ``CARRIERS``)."""

    async def endpoint(websocket: WebSocket) -> None:
        await serve_call(websocket, carrier)

    endpoint.__name__ = f"{carrier.name}_media_endpoint"
    return endpoint


async def serve_call(websocket: WebSocket, carrier: Carrier) -> None:
    state: AppState = websocket.app.state.emostt
    settings = state.settings
    verified = False
    if carrier.signed and settings.twilio_auth_token is not None:
        problem = signature_problem(websocket, settings.twilio_auth_token.get_secret_value(), settings)
        if problem is not None:
            metrics.count_rejection("bad_signature", CLOSE_POLICY.code)
            log.warning("phone stream refused", extra={"carrier": carrier.name, "reason": problem})
            with contextlib.suppress(Exception):
                await websocket.close(CLOSE_POLICY.code)  # before the upgrade: HTTP 403
            return
        verified = True
    await websocket.accept()
    try:
        start = await _read_start(websocket, carrier, min(settings.idle_timeout_s, START_TIMEOUT_S))
        if start is None:
            return  # gone before the call started: nothing to serve or count
        device_ids, config = _admit(websocket, settings, start, verified)
    except CallRefused as exc:
        await _refuse(websocket, carrier, CLOSE_POLICY.code, exc.reason, exc.message)
        return
    refusal = state.admission()
    if refusal is not None:
        await _refuse(websocket, carrier, refusal.code, refusal.error, refusal.message)
        return
    await _serve(websocket, carrier, state, start, device_ids, config)


def signed_urls(websocket: WebSocket, public_url: str | None) -> list[str]:
    """The URL Twilio connected to (what it signed): ``twilio_public_url`` plus the path, or the
    Host header with ``wss`` when the request came over TLS or a proxy says it did
    (``X-Forwarded-Proto``). A ``ws`` guess is tried as ``wss`` too: Twilio connects over wss only,
    so a TLS proxy that does not say so still passes."""
    scope = websocket.scope
    path = scope.get("raw_path") or scope["path"].encode()
    query = scope.get("query_string", b"")
    tail = path.decode("latin-1") + (f"?{query.decode('latin-1')}" if query else "")
    if public_url:
        return [public_url.rstrip("/") + tail]
    host = websocket.headers.get("host", "")
    forwarded = websocket.headers.get("x-forwarded-proto", "").split(",")[0].strip().lower()
    secure = forwarded in ("https", "wss") or scope.get("scheme") == "wss"
    urls = [f"{'wss' if secure else 'ws'}://{host}{tail}"]
    if not secure:
        urls.append(f"wss://{host}{tail}")
    return urls


def signature_problem(websocket: WebSocket, auth_token: str, settings: Settings) -> str | None:
    """None when ``X-Twilio-Signature`` is Twilio's signature of this connection (a GET of the
    URL it connected to, no parameters) under ``auth_token``; else what is wrong, for the log."""
    signature = websocket.headers.get("x-twilio-signature")
    if not signature:
        return "no X-Twilio-Signature header"
    validator = RequestValidator(auth_token)
    for url in signed_urls(websocket, settings.twilio_public_url):
        if validator.validate(url, {}, signature):
            return None
    return "X-Twilio-Signature does not match"


async def _read_start(websocket: WebSocket, carrier: Carrier, timeout_s: float) -> CallStart | None:
    """The call's ``start`` (after an optional ``connected``); None when the carrier went away."""
    try:
        async with asyncio.timeout(timeout_s):
            while True:
                message = await websocket.receive()
                if message["type"] == "websocket.disconnect":
                    return None
                try:
                    event = parse_event(message)
                except ProtocolError as exc:
                    raise CallRefused("invalid_config", str(exc)) from None
                if event["event"] == "start":
                    return parse_start(carrier, event)
                if event["event"] != "connected":
                    raise CallRefused("invalid_config", f"{event['event'][:40]!r} came before start")
    except TimeoutError:
        raise CallRefused("invalid_config", f"no start message within {timeout_s:g} s") from None


def _admit(
    websocket: WebSocket, settings: Settings, start: CallStart, verified: bool
) -> tuple[dict[str, str], SessionConfig]:
    """The device id of each transcribed track and the sessions' config; ``CallRefused`` if the
    call may not be served (token rules, unless Twilio's signature already vouched for it)."""
    query, headers = websocket.query_params, websocket.headers
    device_id = call_device_id(start, parameter(start, query, "device_id"))
    if not verified:
        token = presented_token(
            headers.get("authorization"),
            offered_subprotocols(headers.get("sec-websocket-protocol")),
            parameter(start, query, "token"),
        )
        rejection = check_handshake(
            device_id, headers.get("origin"), token, settings.auth_tokens, settings.allowed_origins
        )
        if rejection is not None:
            raise CallRefused(rejection.reason, rejection.message)
    device_ids = track_device_ids(
        device_id, transcribed_tracks(start, parameter(start, query, TRACKS_PARAMETER))
    )
    audio_format = {"encoding": start.encoding, "sample_rate": start.sample_rate}
    try:
        config = SessionConfig.model_validate({**settings.session_defaults, **audio_format})
    except ValidationError as exc:
        raise CallRefused("invalid_config", validation_problems(exc, "config")) from None
    return device_ids, config


async def _refuse(websocket: WebSocket, carrier: Carrier, code: int, reason: str, message: str) -> None:
    """Counted and logged; the carrier gets only the close (it expects no error messages)."""
    metrics.count_rejection(reason, code)
    log.warning("phone stream refused", extra={"carrier": carrier.name, "reason": reason, "detail": message})
    with contextlib.suppress(Exception):
        await websocket.close(code, reason)


class _Track:
    """One transcribed track as the WebSocket its session runs on: a Starlette WebSocket over the
    call's scope whose receive channel the call's pump feeds, and whose send channel only notes
    the close (the call's socket was accepted already, and the carrier gets nothing back).

    The channel holds at most ``receive_queue_size`` messages: the session's receive loop drains
    it at once (and applies the limits), so a full channel holds the pump back, and one that
    stays full for ``send_timeout_s`` belongs to a session that stopped reading (it is ending):
    the rest of its track is dropped."""

    def __init__(self, scope: Scope, settings: Settings) -> None:
        self._inbox: asyncio.Queue[Message] = asyncio.Queue(settings.receive_queue_size + 1)
        self._inbox.put_nowait({"type": "websocket.connect"})
        self._timeout_s = settings.send_timeout_s
        self.open = True
        self.close_code = CLOSE_NORMAL.code
        self.close_reason = "closed"
        self.socket = WebSocket(dict(scope), self._inbox.get, self._send)

    async def put(self, message: Message) -> None:
        if not self.open:
            return
        try:
            async with asyncio.timeout(self._timeout_s):
                await self._inbox.put(message)
        except TimeoutError:
            self.open = False

    async def audio(self, data: bytes) -> None:
        await self.put({"type": "websocket.receive", "bytes": data})

    async def stop(self) -> None:
        await self.put({"type": "websocket.receive", "text": CLOSE_COMMAND})

    async def _send(self, message: Message) -> None:
        if message["type"] == "websocket.close":
            self.open = False
            self.close_code = message.get("code", CLOSE_NORMAL.code)
            self.close_reason = message.get("reason") or ""


class PhoneConnection(Connection):
    """A track's session: ``/ws/stt``'s connection whose events go to the results publisher
    (``Connection.emit``) and the log, never to the carrier."""

    def __init__(self, websocket: WebSocket, device_id: str, state: AppState, carrier: Carrier) -> None:
        super().__init__(websocket, device_id, state)
        self.protocol = carrier.name

    def outbound(self, payload: events.Event) -> list[dict[str, Any]]:
        kind = payload.get("type")
        fields: dict[str, Any] = {"session_id": self.session_id, "device_id": self.device_id}
        if kind == "final":  # the text stays out of the log: it is in the device's stream
            fields |= {k: payload.get(k) for k in ("utterance_id", "gated", "seq")}
            fields |= {k: (payload.get(k) or {}).get("label") for k in ("emotion", "language")}
            log.info("call final", extra=fields)
        elif kind == "error":
            fields |= {"code": payload.get("code"), "utterance_id": payload.get("utterance_id")}
            log.warning("call error", extra=fields)
        return []


async def _serve(
    websocket: WebSocket,
    carrier: Carrier,
    state: AppState,
    start: CallStart,
    device_ids: Mapping[str, str],
    config: SessionConfig,
) -> None:
    tracks = {track: _Track(websocket.scope, state.settings) for track in device_ids}
    connections = [PhoneConnection(tracks[t].socket, device_ids[t], state, carrier) for t in tracks]
    metrics.PHONE_CALLS.labels(carrier.name).inc()
    log.info(
        "phone call started",
        extra={
            "carrier": carrier.name,
            "call_id": start.call_id,
            "stream_id": start.stream_id,
            "device_ids": list(device_ids.values()),
            "sessions": [c.session_id for c in connections],
        },
    )
    pump = asyncio.create_task(_pump(websocket, carrier, tracks))
    state.open_calls += 1
    try:
        results = await asyncio.gather(*(run_session(c, config) for c in connections), return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException) and not isinstance(result, asyncio.CancelledError):
                log.error("call session failed", exc_info=result, extra={"carrier": carrier.name})
    finally:
        try:
            pump.cancel()
            with contextlib.suppress(BaseException):
                await pump
            ended = [t for t in tracks.values() if t.close_code != CLOSE_NORMAL.code] or list(tracks.values())
            with contextlib.suppress(Exception):
                await websocket.close(ended[0].close_code, ended[0].close_reason)
        finally:
            state.open_calls -= 1


async def _pump(websocket: WebSocket, carrier: Carrier, tracks: Mapping[str, _Track]) -> None:
    """The call's socket to its tracks, in order: media to its track, ``stop`` or the socket
    closing to every track as a ``close`` (its session then ends after its finals). A message too
    big ends the sessions as ``/ws/stt``'s would (1009); other messages (mark, dtmf, ...) carry no
    audio and are skipped; a malformed one is counted and skipped."""
    malformed = 0
    try:
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                code = message.get("code", CLOSE_NORMAL.code)
                for track in tracks.values():
                    if code == CLOSE_TOO_BIG.code:
                        await track.put({"type": "websocket.disconnect", "code": code})
                    else:  # a hang-up without stop (Plivo sends none): the results still count
                        await track.stop()
                return
            try:
                event = parse_event(message)
                if event["event"] == "media":
                    name, audio = media_chunk(event)
                    if audio and name in tracks:
                        await tracks[name].audio(audio)
                elif event["event"] == "stop":
                    for track in tracks.values():
                        await track.stop()
                    return
            except ProtocolError as exc:
                metrics.ERRORS.labels(exc.code).inc()
                malformed += 1
                if malformed == 1:  # once per call: a carrier's bug must not flood the log
                    log.warning(
                        "malformed media stream message", extra={"carrier": carrier.name, "detail": str(exc)}
                    )
    except Exception:
        log.exception("phone stream pump failed", extra={"carrier": carrier.name})
        for track in tracks.values():
            await track.stop()
