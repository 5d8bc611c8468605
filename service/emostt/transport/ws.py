"""The ``/ws/stt/{device_id}`` endpoint: handshake policy, message decoding, limits, event sending.

No torch here. One receive loop per connection feeds a bounded queue that one consumer
(the session) drains in order, so audio and control messages never race each other.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Mapping
from typing import Any

import orjson
from fastapi import WebSocket, WebSocketDisconnect
from starlette.websockets import WebSocketState

from emostt.errors import EmosttError
from emostt.observability import metrics
from emostt.streaming.protocol import (
    Audio,
    Command,
    Control,
    InvalidConfigError,
    ProtocolError,
    SessionConfig,
    parse_text,
)
from emostt.streaming.session import Session
from emostt.transport.auth import SUBPROTOCOL, check_handshake, offered_subprotocols, presented_token
from emostt.transport.state import AppState

log = logging.getLogger(__name__)

CLOSE_NORMAL, CLOSE_POLICY, CLOSE_TOO_BIG, CLOSE_INTERNAL, CLOSE_RESTART, CLOSE_OVERLOADED = (
    1000,
    1008,
    1009,
    1011,
    1012,
    1013,
)


class _CloseSession(Exception):  # noqa: N818 - control flow, not an error
    def __init__(self, code: int, error: str | None = None, message: str = "") -> None:
        super().__init__(message)
        self.code, self.error, self.message = code, error, message


class Connection:
    def __init__(self, websocket: WebSocket, device_id: str, state: AppState) -> None:
        self.ws = websocket
        self.device_id = device_id
        self.state = state
        self.session_id = uuid.uuid4().hex[:16]
        self._seq = 0
        self._send_lock = asyncio.Lock()
        self._open = True
        self.draining = False
        self.queue: asyncio.Queue[Command] = asyncio.Queue(state.settings.receive_queue_size)

    def drain(self) -> None:
        self.draining = True
        with contextlib.suppress(asyncio.QueueFull):
            self.queue.put_nowait(Control("close"))

    async def emit(self, event: dict[str, Any]) -> None:
        async with self._send_lock:
            if not self._open:
                return
            self._seq += 1
            payload = {**event, "session_id": self.session_id, "seq": self._seq}
            try:
                await self.ws.send_text(orjson.dumps(payload).decode())
            except (WebSocketDisconnect, RuntimeError, OSError):
                self._open = False

    async def error(self, code: str, message: str, retryable: bool = False) -> None:
        metrics.ERRORS.labels(code).inc()
        await self.emit({"type": "error", "code": code, "message": message, "retryable": retryable})

    async def close(self, code: int, reason: str = "") -> None:
        async with self._send_lock:
            self._open = False
            if self.ws.application_state != WebSocketState.DISCONNECTED:
                with contextlib.suppress(Exception):
                    await self.ws.close(code, reason[:120])

    async def reject(self, code: int, reason: str, message: str) -> None:
        metrics.REJECTED_CONNECTIONS.labels(reason).inc()
        log.info("connection refused", extra={"session_id": self.session_id, "reason": reason})
        await self.ws.accept(subprotocol=self._subprotocol())
        await self.error(reason, message, retryable=code == CLOSE_OVERLOADED)
        await self.close(code, reason)

    def _subprotocol(self) -> str | None:
        offered = offered_subprotocols(self.ws.headers.get("sec-websocket-protocol"))
        return SUBPROTOCOL if SUBPROTOCOL in offered else None


async def stt_endpoint(websocket: WebSocket, device_id: str) -> None:
    state: AppState = websocket.app.state.emostt
    settings = state.settings
    conn = Connection(websocket, device_id, state)
    headers = websocket.headers
    token = presented_token(
        headers.get("authorization"),
        offered_subprotocols(headers.get("sec-websocket-protocol")),
        websocket.query_params.get("token"),
    )
    rejection = check_handshake(
        device_id, headers.get("origin"), token, settings.auth_tokens, settings.allowed_origins
    )
    if rejection is not None:
        await conn.reject(CLOSE_POLICY, rejection.reason, rejection.message)
        return
    if state.draining or not state.ready or state.batcher is None:
        await conn.reject(
            CLOSE_RESTART if state.draining else CLOSE_OVERLOADED, "not_ready", "server is not ready"
        )
        return
    if state.batcher.overloaded:
        await conn.reject(CLOSE_OVERLOADED, "overloaded", "the model is saturated; retry later")
        return
    if len(state.connections) >= settings.max_connections:
        await conn.reject(
            CLOSE_OVERLOADED, "too_many_connections", "server is at its connection limit; retry later"
        )
        return
    try:
        rate = int(websocket.query_params.get("sample_rate", "16000"))
        config = SessionConfig.model_validate({**settings.session_defaults, "sample_rate": rate})
    except ValueError as exc:  # a bad int, or pydantic ValidationError (a ValueError)
        await conn.reject(CLOSE_POLICY, "invalid_config", f"bad session parameters: {exc}")
        return

    await websocket.accept(subprotocol=conn._subprotocol())
    state.connections[conn.session_id] = conn
    metrics.ACTIVE_SESSIONS.set(len(state.connections))
    session = Session(
        conn.session_id, state.batcher, conn.emit, config, speculative_finals=settings.speculative_finals
    )
    log.info("session opened", extra={"session_id": conn.session_id, "device_id": device_id})
    try:
        await conn.emit(
            {
                "type": "ready",
                "device_id": device_id,
                "model": {"name": state.model.name, "revision": state.model.revision}
                if state.model
                else None,
                "sample_rate": config.sample_rate,
                "config": config.model_dump(),
            }
        )
        code, reason = await _serve(conn, session)
        await conn.close(code, reason)
    finally:
        session.abort()
        state.connections.pop(conn.session_id, None)
        metrics.ACTIVE_SESSIONS.set(len(state.connections))
        log.info("session closed", extra={"session_id": conn.session_id})


async def _serve(conn: Connection, session: Session) -> tuple[int, str]:
    """Run the receive loop and the consumer; return the close code and reason."""
    queue = conn.queue
    consumer = asyncio.create_task(_consume(conn, session, queue))
    try:
        await _receive(conn, session, queue, consumer)
        return (CLOSE_RESTART, "server restarting") if conn.draining else (CLOSE_NORMAL, "closed")
    except _CloseSession as closing:
        if closing.error:
            await conn.error(closing.error, closing.message)
        return closing.code, closing.error or "closed"
    except WebSocketDisconnect as exc:
        if exc.code == CLOSE_TOO_BIG:
            metrics.REJECTED_CONNECTIONS.labels("message_too_big").inc()
        return exc.code, "client disconnected"
    except Exception:
        log.exception("session failed", extra={"session_id": conn.session_id})
        await conn.error("internal_error", "internal error; reconnect", retryable=True)
        return CLOSE_INTERNAL, "internal error"
    finally:
        if not consumer.done():
            consumer.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await consumer


async def _receive(
    conn: Connection, session: Session, queue: asyncio.Queue[Command], consumer: asyncio.Task[None]
) -> None:
    settings = conn.state.settings
    opened = time.monotonic()
    audio_s = 0.0
    while True:
        now = time.monotonic()
        remaining = settings.max_session_s - (now - opened)
        if remaining <= 0:
            await _flush_then(consumer, queue)
            raise _CloseSession(
                CLOSE_NORMAL, "session_too_long", f"sessions last at most {settings.max_session_s:.0f} s"
            )
        receive = asyncio.ensure_future(conn.ws.receive())
        done, _ = await asyncio.wait(
            {receive, consumer},
            timeout=min(settings.idle_timeout_s, remaining),
            return_when=asyncio.FIRST_COMPLETED,
        )
        if consumer in done:
            receive.cancel()
            consumer.result()  # re-raise the consumer's _CloseSession, or finish on close
            return
        if not done:
            receive.cancel()
            if time.monotonic() - opened >= settings.max_session_s:
                continue
            raise _CloseSession(
                CLOSE_NORMAL, "idle_timeout", f"nothing received for {settings.idle_timeout_s:.0f} s"
            )
        message = receive.result()
        if message["type"] == "websocket.disconnect":
            raise WebSocketDisconnect(message.get("code", 1000))
        try:
            command = _decode(message)
        except ProtocolError as exc:
            await conn.error(exc.code, str(exc))
            continue
        if isinstance(command, Control) and command.kind == "keepalive":
            continue
        if isinstance(command, Audio):
            audio_s += len(command.pcm) / (2 * session.config.sample_rate)
            allowed = settings.burst_audio_s + (time.monotonic() - opened) * settings.max_realtime_factor
            if audio_s > allowed:
                metrics.REJECTED_CONNECTIONS.labels("rate_limited").inc()
                raise _CloseSession(
                    CLOSE_POLICY,
                    "rate_limited",
                    f"audio arrives faster than {settings.max_realtime_factor:g}x real time; "
                    "stream in real time",
                )
        try:
            queue.put_nowait(command)
        except asyncio.QueueFull:
            metrics.REJECTED_CONNECTIONS.labels("too_fast").inc()
            raise _CloseSession(
                CLOSE_POLICY, "too_fast", "the server cannot keep up with this stream"
            ) from None


async def _flush_then(consumer: asyncio.Task[None], queue: asyncio.Queue[Command]) -> None:
    await queue.put(Control("close"))
    with contextlib.suppress(Exception):
        await asyncio.wait_for(asyncio.shield(consumer), timeout=30)


def _decode(message: Mapping[str, Any]) -> Command:
    if message.get("bytes") is not None:
        return Audio(message["bytes"])
    if message.get("text") is not None:
        return parse_text(message["text"])
    raise ProtocolError("empty message")


async def _consume(conn: Connection, session: Session, queue: asyncio.Queue[Command]) -> None:
    while True:
        command = await queue.get()
        if isinstance(command, Control) and command.kind == "close":
            await session.flush()
            return
        try:
            await session.handle(command)
        except InvalidConfigError as exc:
            await conn.error(exc.code, str(exc))
        except EmosttError as exc:
            await conn.error(exc.code, str(exc), exc.retryable)
