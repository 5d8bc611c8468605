"""Serving one session over a connection: the part every WebSocket protocol shares.

One receive loop per connection feeds a bounded queue that one consumer (the session) drains in
order, so audio and control messages never race each other. The limits (session length, idle,
real-time rate, queue) are enforced here.

Every way a session ends goes through ``_serve``'s close path: utterances still open get their
finals first (policy closes, drain, client ``close``), or an error naming them when that is
impossible (a bug, a forced shutdown); a client that went away is counted. One log line per
session end says why. Event-loop only; no torch.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

from fastapi import WebSocketDisconnect

from emostt.errors import EmosttError, InvalidConfigError, ProtocolError
from emostt.observability import metrics
from emostt.streaming import events
from emostt.streaming.protocol import Audio, Control
from emostt.streaming.session import Session
from emostt.transport.connection import CloseSession, Connection, Ending, Inbound, Step
from emostt.vocabulary import (
    BYTES_PER_SAMPLE,
    CLOSE_INTERNAL,
    CLOSE_NORMAL,
    CLOSE_POLICY,
    CLOSE_RESTART,
    CLOSE_TOO_BIG,
)
from emostt.vocabulary.session_config import SessionConfig

log = logging.getLogger(__name__)

# Longest wait for a closing session's finals before its unfinished utterances get errors.
FLUSH_TIMEOUT_S = 30.0


async def run_session(conn: Connection, config: SessionConfig, *, endpoint_events: bool = False) -> None:
    """Accept an admitted connection, serve its session until it ends, and clean up: the part
    every WebSocket protocol shares (limits, drain, finals before the close, metrics, logs)."""
    state, websocket, device_id = conn.state, conn.ws, conn.device_id
    settings = state.settings
    assert state.batcher is not None and state.vad is not None  # admission checked readiness

    opened = time.monotonic()
    ending = Ending(CLOSE_INTERNAL.code, "internal_error")
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
            turns=state.turns,
        )
        log.info(
            "session opened",
            extra={"session_id": conn.session_id, "device_id": device_id, "protocol": conn.protocol},
        )
        # The session's effective config: what it serves (semantic turns need a turn model).
        effective = session.config
        await conn.emit(events.ready(device_id, state.model, effective.sample_rate, effective.model_dump()))
        await session.start()
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


async def _serve(conn: Connection, session: Session) -> Ending:
    """Run the receive loop and the consumer until the session ends; finish its utterances."""
    queue = conn.queue
    consumer = asyncio.create_task(_consume(conn, session, queue))
    try:
        await _receive(conn, session, queue, consumer)
        ending = (
            Ending(CLOSE_RESTART.code, "drained") if conn.draining else Ending(CLOSE_NORMAL.code, "closed")
        )
    except CloseSession as closing:
        ending = closing.ending
    except WebSocketDisconnect as exc:
        if exc.code == CLOSE_TOO_BIG.code:
            metrics.count_rejection("message_too_big", CLOSE_TOO_BIG.code)
        ending = Ending(exc.code, "message_too_big" if exc.code == CLOSE_TOO_BIG.code else "client_gone")
        ending.client_gone = True
    except Exception:
        log.exception("session failed", extra={"session_id": conn.session_id})
        ending = Ending(
            CLOSE_INTERNAL.code, "internal_error", "internal_error", "internal error; reconnect", flush=False
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
            await conn.error(ending.error, ending.message, retryable=ending.code == CLOSE_RESTART.code)
    await _stop(consumer)
    return ending


async def _stop(task: asyncio.Task[None]) -> None:
    """Cancel ``task`` and wait until it has ended, cancelling it again while it runs on.

    One cancellation is not always enough: library code can lose it (``asyncio.wait_for`` before
    Python 3.12 returns a result that completed together with the cancellation), and a consumer
    that lost it goes back to waiting on its queue forever, holding its session, its slot and
    its share of the limits open (seen with Realtime clients that aborted TCP after a commit).
    """
    while not task.done():
        task.cancel()
        await asyncio.wait((task,), timeout=1.0)
    if not task.cancelled():
        task.exception()  # retrieved: a consumer that failed has been logged by _serve already


async def _flush(consumer: asyncio.Task[None], queue: asyncio.Queue[Inbound]) -> None:
    """Let the consumer work through what was received, end the open utterance and send its
    final; bounded, so a stuck model cannot hold a closing session forever."""
    if consumer.done():
        return

    async def close_and_wait() -> None:
        await queue.put(Control("close"))
        await asyncio.shield(consumer)

    with contextlib.suppress(Exception):  # TimeoutError included
        async with asyncio.timeout(FLUSH_TIMEOUT_S):
            await close_and_wait()


async def _receive(
    conn: Connection, session: Session, queue: asyncio.Queue[Inbound], consumer: asyncio.Task[None]
) -> None:
    settings = conn.state.settings
    opened = time.monotonic()
    audio_s = 0.0
    while True:
        remaining = settings.max_session_s - (time.monotonic() - opened)
        if remaining <= 0:
            raise CloseSession(
                Ending(
                    CLOSE_NORMAL.code,
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
            raise CloseSession(conn.interrupted.result())
        if consumer in done:
            consumer.result()  # re-raise the consumer's failure, or finish on close
            return
        if not done:
            # Which deadline ran out is decided by which one the wait was for, not by re-reading
            # the clock: the event loop may wake a timer slightly early.
            if remaining <= settings.idle_timeout_s:
                continue
            raise CloseSession(
                Ending(
                    CLOSE_NORMAL.code,
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
            config = session.config
            audio_s += len(command.pcm) / (BYTES_PER_SAMPLE[config.encoding] * config.sample_rate)
            allowed = settings.burst_audio_s + (time.monotonic() - opened) * settings.max_realtime_factor
            if audio_s > allowed:
                metrics.count_rejection("rate_limited", CLOSE_POLICY.code)
                raise CloseSession(
                    Ending(
                        CLOSE_POLICY.code,
                        "rate_limited",
                        "rate_limited",
                        f"audio arrives faster than {settings.max_realtime_factor:g}x real time; "
                        "stream in real time",
                    )
                )
        try:
            queue.put_nowait(command)
        except asyncio.QueueFull:
            metrics.count_rejection("too_fast", CLOSE_POLICY.code)
            raise CloseSession(
                Ending(
                    CLOSE_POLICY.code, "too_fast", "too_fast", "the server cannot keep up with this stream"
                )
            ) from None


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
