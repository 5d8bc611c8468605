"""The ``/ws/stt/{device_id}`` endpoint: handshake policy, message decoding, limits, event sending.

No torch here. One receive loop per connection feeds a bounded queue that one consumer
(the session) drains in order, so audio and control messages never race each other.

Every way a session ends goes through ``_serve``'s close path: utterances still open get their
finals first (policy closes, drain, client ``close``), or an error naming them when that is
impossible (a bug, a forced shutdown); a client that went away is counted. One log line per
session end says why.

``run_session`` and ``Connection`` are what every WebSocket protocol shares: OpenAI Realtime
(transport/openai_realtime.py) subclasses the connection and reuses the rest.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson
from fastapi import WebSocket, WebSocketDisconnect
from pydantic import ValidationError
from starlette.websockets import WebSocketState

from emostt.errors import EmosttError, InvalidConfigError, ProtocolError, validation_problems
from emostt.observability import metrics
from emostt.streaming import events
from emostt.streaming.protocol import Audio, Command, Control, parse_text
from emostt.streaming.session import Session
from emostt.transport.auth import SUBPROTOCOL, check_handshake, offered_subprotocols, presented_token
from emostt.transport.state import AppState
from emostt.vocabulary import SAMPLE_RATE
from emostt.vocabulary.session_config import SessionConfig

log = logging.getLogger(__name__)

CLOSE_NORMAL, CLOSE_POLICY, CLOSE_TOO_BIG, CLOSE_INTERNAL, CLOSE_RESTART, CLOSE_OVERLOADED = (
    1000,
    1008,
    1009,
    1011,
    1012,
    1013,
)
# Longest wait for a closing session's finals before its unfinished utterances get errors.
FLUSH_TIMEOUT_S = 30.0


@dataclass
class _Ending:
    """How a session ends: the close code, the error event (if any) and whether finals come first."""

    code: int
    reason: str
    error: str | None = None
    message: str = ""
    flush: bool = True  # finish open utterances (finals) before closing
    client_gone: bool = False


@dataclass(frozen=True)
class Step:
    """A protocol's own action on the session (OpenAI Realtime's commit, clear, session.update),
    run by the consumer in order with the audio and commands around it."""

    run: Callable[[Session], Awaitable[None]]


Inbound = Command | Step


class _CloseSession(Exception):  # noqa: N818 - control flow, not an error
    def __init__(self, ending: _Ending) -> None:
        super().__init__(ending.reason)
        self.ending = ending


class Connection:
    """One WebSocket connection. ``/ws/stt`` uses it as is; another protocol subclasses it and
    overrides ``decode`` (its messages to commands), ``outbound`` (session events to its wire
    events) and ``on_protocol_error``, keeping the limits, drain and close paths shared."""

    protocol = "stt"  # names the protocol in the session's log lines

    def __init__(self, websocket: WebSocket, device_id: str, state: AppState) -> None:
        self.ws = websocket
        self.device_id = device_id
        self.state = state
        self.session_id = uuid.uuid4().hex[:16]
        self._seq = 0
        self._send_lock = asyncio.Lock()
        self._open = True
        self.draining = False
        self.queue: asyncio.Queue[Inbound] = asyncio.Queue(state.settings.receive_queue_size)
        # Set by others to end the session from outside its receive loop.
        self.interrupted: asyncio.Future[_Ending] = asyncio.get_running_loop().create_future()

    def drain(self) -> None:
        self.draining = True
        with contextlib.suppress(asyncio.QueueFull):
            self.queue.put_nowait(Control("close"))

    def interrupt(self, code: int, error: str, message: str) -> None:
        if not self.interrupted.done():
            self.interrupted.set_result(_Ending(code, error, error, message, flush=False))

    async def emit(self, event: events.Event) -> None:
        async with self._send_lock:
            if not self._open:
                return
            self._seq += 1
            payload = {**event, "session_id": self.session_id, "seq": self._seq}
            if self.state.results is not None:
                # Queued before the send and never awaited: the device's result does not wait.
                self.state.results.offer(self.device_id, payload)
            for message in self.outbound(payload):
                await self._send_locked(message)

    def outbound(self, payload: events.Event) -> list[dict[str, Any]]:
        """What goes on the wire for one session event (``/ws/stt``: the event itself)."""
        return [payload]

    def decode(self, message: Mapping[str, Any]) -> Inbound:
        """One received WebSocket message to what the consumer runs; raises ``ProtocolError``."""
        return _decode(message)

    async def on_protocol_error(self, exc: ProtocolError) -> None:
        """A message that could not be decoded: the session goes on."""
        await self.error(exc.code, str(exc))

    async def _send_locked(self, message: dict[str, Any]) -> None:
        """Send one message; the caller holds ``_send_lock``."""
        if not self._open:
            return
        try:
            await asyncio.wait_for(
                self.ws.send_text(orjson.dumps(message).decode()), self.state.settings.send_timeout_s
            )
        except asyncio.TimeoutError:
            # The client stopped reading: nothing more can reach it.
            self._open = False
            metrics.count_rejection("stalled_reader", CLOSE_POLICY)
            if not self.interrupted.done():
                self.interrupted.set_result(
                    _Ending(CLOSE_POLICY, "stalled_reader", flush=False, client_gone=True)
                )
        except (WebSocketDisconnect, RuntimeError, OSError):
            self._open = False

    async def error(self, code: str, message: str, retryable: bool = False) -> None:
        metrics.ERRORS.labels(code).inc()
        await self.emit(events.error(code, message, retryable))

    async def close(self, code: int, reason: str = "") -> None:
        async with self._send_lock:
            self._open = False
            if self.ws.application_state != WebSocketState.DISCONNECTED:
                timeout = self.state.settings.send_timeout_s
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(self.ws.close(code, reason[:120]), timeout)

    async def reject(self, code: int, reason: str, message: str) -> None:
        metrics.count_rejection(reason, code)
        log.info(
            "connection refused",
            extra={"session_id": self.session_id, "device_id": self.device_id, "reason": reason},
        )
        await self.ws.accept(subprotocol=self._subprotocol())
        await self.error(reason, message, retryable=code in (CLOSE_OVERLOADED, CLOSE_RESTART))
        await self.close(code, reason)

    def _subprotocol(self) -> str | None:
        offered = offered_subprotocols(self.ws.headers.get("sec-websocket-protocol"))
        return SUBPROTOCOL if SUBPROTOCOL in offered else None


async def stt_endpoint(websocket: WebSocket, device_id: str) -> None:
    """``/ws/stt/{device_id}``: the handshake checks, then ``run_session``."""
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
    refusal = state.admission()
    if refusal is not None:
        await conn.reject(refusal.code, refusal.error, refusal.message)
        return
    try:
        rate = int(websocket.query_params.get("sample_rate", str(SAMPLE_RATE)))
        config = SessionConfig.model_validate({**settings.session_defaults, "sample_rate": rate})
    except (ValueError, ValidationError) as exc:
        await conn.reject(CLOSE_POLICY, "invalid_config", _config_problem(exc))
        return
    await run_session(conn, config)


async def run_session(conn: Connection, config: SessionConfig, *, endpoint_events: bool = False) -> None:
    """Accept an admitted connection, serve its session until it ends, and clean up: the part
    every WebSocket protocol shares (limits, drain, finals before the close, metrics, logs)."""
    state, websocket, device_id = conn.state, conn.ws, conn.device_id
    settings = state.settings
    assert state.batcher is not None and state.vad is not None  # admission checked readiness

    opened = time.monotonic()
    ending = _Ending(CLOSE_INTERNAL, "internal_error")
    session: Session | None = None
    state.add(conn.session_id, conn)  # released in `finally`, whatever fails from here on
    try:
        await websocket.accept(subprotocol=conn._subprotocol())
        session = Session(
            conn.session_id,
            state.batcher,
            state.vad,
            conn.emit,
            config,
            speculative_finals=settings.speculative_finals,
            endpoint_events=endpoint_events,
        )
        log.info(
            "session opened",
            extra={"session_id": conn.session_id, "device_id": device_id, "protocol": conn.protocol},
        )
        await conn.emit(events.ready(device_id, state.model, config.sample_rate, config.model_dump()))
        ending = await _serve(conn, session)
    finally:
        if session is not None:
            session.abort()
        with contextlib.suppress(Exception):
            await conn.close(ending.code, ending.reason)
        state.remove(conn.session_id)
        metrics.SESSIONS_CLOSED.labels(ending.reason).inc()
        stats = session.stats if session is not None else None
        log.info(
            "session closed",
            extra={
                "session_id": conn.session_id,
                "device_id": device_id,
                "close_code": ending.code,
                "reason": ending.reason,
                "duration_s": round(time.monotonic() - opened, 3),
                "utterances": stats.utterances if stats else 0,
                "finals": stats.finals if stats else 0,
                "errors": stats.errors if stats else 0,
            },
        )


def _config_problem(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        return "bad session parameters: " + validation_problems(exc, "config")
    return "bad session parameters: sample_rate must be an integer"


async def _serve(conn: Connection, session: Session) -> _Ending:
    """Run the receive loop and the consumer until the session ends; finish its utterances."""
    queue = conn.queue
    consumer = asyncio.create_task(_consume(conn, session, queue))
    try:
        await _receive(conn, session, queue, consumer)
        ending = _Ending(CLOSE_RESTART, "drained") if conn.draining else _Ending(CLOSE_NORMAL, "closed")
    except _CloseSession as closing:
        ending = closing.ending
    except WebSocketDisconnect as exc:
        if exc.code == CLOSE_TOO_BIG:
            metrics.count_rejection("message_too_big", CLOSE_TOO_BIG)
        ending = _Ending(exc.code, "message_too_big" if exc.code == CLOSE_TOO_BIG else "client_gone")
        ending.client_gone = True
    except Exception:
        log.exception("session failed", extra={"session_id": conn.session_id})
        ending = _Ending(
            CLOSE_INTERNAL, "internal_error", "internal_error", "internal error; reconnect", flush=False
        )
    if ending.error in ("rate_limited", "too_fast", "idle_timeout", "session_too_long", "stalled_reader"):
        log.info(
            "session closed by policy",
            extra={"session_id": conn.session_id, "device_id": conn.device_id, "reason": ending.error},
        )
    if not ending.client_gone:
        if ending.flush:
            await _flush(consumer, queue)
        if session.unfinished:
            await session.fail_unfinished(
                ending.error or "internal_error", ending.message or "the session ended before this result"
            )
        if ending.error:
            await conn.error(ending.error, ending.message, retryable=ending.code == CLOSE_RESTART)
    if not consumer.done():
        consumer.cancel()
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await consumer
    return ending


async def _flush(consumer: asyncio.Task[None], queue: asyncio.Queue[Inbound]) -> None:
    """Let the consumer work through what was received, end the open utterance and send its
    final; bounded, so a stuck model cannot hold a closing session forever."""
    if consumer.done():
        return

    async def close_and_wait() -> None:
        await queue.put(Control("close"))
        await asyncio.shield(consumer)

    with contextlib.suppress(asyncio.TimeoutError, Exception):
        await asyncio.wait_for(close_and_wait(), FLUSH_TIMEOUT_S)


async def _receive(
    conn: Connection, session: Session, queue: asyncio.Queue[Inbound], consumer: asyncio.Task[None]
) -> None:
    settings = conn.state.settings
    opened = time.monotonic()
    audio_s = 0.0
    while True:
        remaining = settings.max_session_s - (time.monotonic() - opened)
        if remaining <= 0:
            raise _CloseSession(
                _Ending(
                    CLOSE_NORMAL,
                    "session_too_long",
                    "session_too_long",
                    f"sessions last at most {settings.max_session_s:.0f} s",
                )
            )
        receive = asyncio.ensure_future(conn.ws.receive())
        waitables: set[asyncio.Future[Any]] = {receive, consumer, conn.interrupted}
        done, _ = await asyncio.wait(
            waitables,
            timeout=min(settings.idle_timeout_s, remaining),
            return_when=asyncio.FIRST_COMPLETED,
        )
        if receive not in done:
            receive.cancel()
        if conn.interrupted in done:
            raise _CloseSession(conn.interrupted.result())
        if consumer in done:
            consumer.result()  # re-raise the consumer's failure, or finish on close
            return
        if not done:
            # Which deadline ran out is decided by which one the wait was for, not by re-reading
            # the clock: the event loop may wake a timer slightly early.
            if remaining <= settings.idle_timeout_s:
                continue
            raise _CloseSession(
                _Ending(
                    CLOSE_NORMAL,
                    "idle_timeout",
                    "idle_timeout",
                    f"nothing received for {settings.idle_timeout_s:.0f} s",
                )
            )
        message = receive.result()
        if message["type"] == "websocket.disconnect":
            raise WebSocketDisconnect(message.get("code", 1000))
        try:
            command = conn.decode(message)
        except ProtocolError as exc:
            await conn.on_protocol_error(exc)
            continue
        if isinstance(command, Control) and command.kind == "keepalive":
            continue
        if isinstance(command, Audio):
            audio_s += len(command.pcm) / (2 * session.config.sample_rate)
            allowed = settings.burst_audio_s + (time.monotonic() - opened) * settings.max_realtime_factor
            if audio_s > allowed:
                metrics.count_rejection("rate_limited", CLOSE_POLICY)
                raise _CloseSession(
                    _Ending(
                        CLOSE_POLICY,
                        "rate_limited",
                        "rate_limited",
                        f"audio arrives faster than {settings.max_realtime_factor:g}x real time; "
                        "stream in real time",
                    )
                )
        try:
            queue.put_nowait(command)
        except asyncio.QueueFull:
            metrics.count_rejection("too_fast", CLOSE_POLICY)
            raise _CloseSession(
                _Ending(CLOSE_POLICY, "too_fast", "too_fast", "the server cannot keep up with this stream")
            ) from None


def _decode(message: Mapping[str, Any]) -> Command:
    if message.get("bytes") is not None:
        return Audio(message["bytes"])
    if message.get("text") is not None:
        return parse_text(message["text"])
    raise ProtocolError("empty message")


async def _consume(conn: Connection, session: Session, queue: asyncio.Queue[Inbound]) -> None:
    while True:
        command = await queue.get()
        if isinstance(command, Control) and command.kind == "close":
            await session.flush()
            return
        try:
            if isinstance(command, Step):
                await command.run(session)
            else:
                await session.handle(command)
        except InvalidConfigError as exc:
            await conn.error(exc.code, str(exc))
        except EmosttError as exc:
            await conn.error(exc.code, str(exc), exc.retryable)
