"""One WebSocket connection as every protocol sees it: sending events in order (and to the
results sink), errors, refusals and the close, the send timeout that drops a client which stopped
reading, and the hooks a protocol overrides (``decode``, ``outbound``, ``on_protocol_error``).

Event-loop only. ``runtime.py`` runs a session over a connection; ``ws.py`` (``/ws/stt``) and
``openai_realtime.py`` are the protocols.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson
from fastapi import WebSocket, WebSocketDisconnect
from starlette.websockets import WebSocketState

from emostt.errors import ProtocolError
from emostt.observability import metrics
from emostt.streaming import events
from emostt.streaming.protocol import Audio, Command, Control, parse_text
from emostt.streaming.session import Session
from emostt.transport.auth import SUBPROTOCOL, offered_subprotocols
from emostt.transport.state import AppState
from emostt.vocabulary import CLOSE_BY_CODE, CLOSE_POLICY

log = logging.getLogger(__name__)


@dataclass
class Ending:
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


class CloseSession(Exception):  # noqa: N818 - control flow, not an error
    """Raised to end a session the way ``ending`` says."""

    def __init__(self, ending: Ending) -> None:
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
        self.interrupted: asyncio.Future[Ending] = asyncio.get_running_loop().create_future()

    def drain(self) -> None:
        self.draining = True
        with contextlib.suppress(asyncio.QueueFull):
            self.queue.put_nowait(Control("close"))

    def interrupt(self, code: int, error: str, message: str) -> None:
        if not self.interrupted.done():
            self.interrupted.set_result(Ending(code, error, error, message, flush=False))

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
        return decode_stt(message)

    async def on_protocol_error(self, exc: ProtocolError) -> None:
        """A message that could not be decoded: the session goes on."""
        await self.error(exc.code, str(exc))

    async def _send_locked(self, message: dict[str, Any]) -> None:
        """Send one message; the caller holds ``_send_lock``."""
        if not self._open:
            return
        try:
            # asyncio.timeout, not wait_for: before Python 3.12 wait_for can return a send that
            # completed together with a cancellation of this task and lose the cancellation.
            async with asyncio.timeout(self.state.settings.send_timeout_s):
                await self.ws.send_text(orjson.dumps(message).decode())
        except TimeoutError:
            # The client stopped reading: nothing more can reach it.
            self._open = False
            metrics.count_rejection("stalled_reader", CLOSE_POLICY.code)
            if not self.interrupted.done():
                self.interrupted.set_result(
                    Ending(CLOSE_POLICY.code, "stalled_reader", flush=False, client_gone=True)
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
                    async with asyncio.timeout(timeout):
                        await self.ws.close(code, reason[:120])

    async def reject(self, code: int, reason: str, message: str) -> None:
        metrics.count_rejection(reason, code)
        log.info(
            "connection refused",
            extra={"session_id": self.session_id, "device_id": self.device_id, "reason": reason},
        )
        await self.ws.accept(subprotocol=self._subprotocol())
        await self.error(reason, message, retryable=CLOSE_BY_CODE[code].retryable)
        await self.close(code, reason)

    def _subprotocol(self) -> str | None:
        offered = offered_subprotocols(self.ws.headers.get("sec-websocket-protocol"))
        return SUBPROTOCOL if SUBPROTOCOL in offered else None


def decode_stt(message: Mapping[str, Any]) -> Command:
    """A ``/ws/stt`` message: binary frames are PCM, text frames JSON commands (docs/protocol.md)."""
    if message.get("bytes") is not None:
        return Audio(message["bytes"])
    if message.get("text") is not None:
        return parse_text(message["text"])
    raise ProtocolError("empty message")
