"""Fault injection for the clients' reconnect rules: a real WebSocket server that speaks just
enough of emostt's protocol (docs/protocol.md) to open a session, then ends the first one with
a chosen close code, the way the real server does (an ``error`` event, then the close). Every
later session stays open until the client closes it, so a reconnect is seen as a second
connection that lasts.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from websockets.asyncio.server import ServerConnection, serve
from websockets.typing import Subprotocol

NO_CLOSE_FRAME = 1006  # not sent: the TCP connection is cut (a network loss)


@dataclass(frozen=True)
class Fault:
    """How the first session ends: its close ``code`` after the ``error`` event (if any);
    ``at_handshake``: instead of ``ready``, as a refusal is."""

    code: int
    error: str | None = None
    retryable: bool = False
    at_handshake: bool = False


# The faults the clients' tests inject, each as the server sends it.
FAULTS: dict[int, Fault] = {
    1000: Fault(1000, "idle_timeout"),  # a session limit: finals first, then 1000
    1006: Fault(NO_CLOSE_FRAME),
    1008: Fault(1008, "rate_limited"),
    1012: Fault(1012),  # a drain: the server restarts
    1013: Fault(1013, "too_many_connections", retryable=True, at_handshake=True),
}


class ClosingServer:
    """``url``: the base URL the clients are given; ``connections``: sessions opened so far."""

    def __init__(self, fault: Fault) -> None:
        self.fault = fault
        self.connections = 0
        self.client_closes = 0  # sessions the client ended with {"type": "close"}
        self.url = ""

    async def wait_for_connections(self, count: int, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while self.connections < count:
            assert time.monotonic() < deadline, f"{self.connections} connection(s), not {count}"
            await asyncio.sleep(0.01)

    async def _session(self, ws: ServerConnection) -> None:
        self.connections += 1
        number = self.connections
        seq = 0

        async def send(event: dict[str, Any]) -> None:
            nonlocal seq
            seq += 1
            await ws.send(json.dumps({**event, "session_id": f"s{number}", "seq": seq}))

        faulty = number == 1
        if faulty and self.fault.at_handshake:
            await self._end(ws, send)
            return
        await send(
            {
                "type": "ready",
                "device_id": "device",
                "sample_rate": 16000,
                "model": {"name": "closing-server", "revision": "0"},
                "config": {},
            }
        )
        # Answer config messages (Pipecat waits for the answer) for a moment, then end the first
        # session; later ones last until the client closes them.
        deadline = time.monotonic() + (0.3 if faulty else 3600.0)
        while (left := deadline - time.monotonic()) > 0:
            try:
                message = await asyncio.wait_for(ws.recv(), left)
            except TimeoutError:
                break
            except Exception:
                return  # the client went away
            if isinstance(message, bytes):
                continue
            kind = json.loads(message).get("type")
            if kind == "config":
                await send({"type": "config", "config": {}})
            elif kind == "close":
                self.client_closes += 1
                await ws.close(1000)
                return
        if faulty:
            await self._end(ws, send)

    async def _end(self, ws: ServerConnection, send: Any) -> None:
        fault = self.fault
        if fault.error is not None:
            await send(
                {"type": "error", "code": fault.error, "message": "injected", "retryable": fault.retryable}
            )
        if fault.code == NO_CLOSE_FRAME:
            ws.transport.abort()
        else:
            await ws.close(fault.code, fault.error or "")

    @asynccontextmanager
    async def running(self) -> AsyncIterator[ClosingServer]:
        async with serve(self._session, "127.0.0.1", 0, select_subprotocol=_subprotocol) as server:
            port = next(iter(server.sockets)).getsockname()[1]
            self.url = f"ws://127.0.0.1:{port}"
            yield self


def _subprotocol(_: ServerConnection, offered: Sequence[str]) -> Subprotocol | None:
    # The web client offers emostt.v1 (and its token as bearer.<token>); the Python ones, none.
    return Subprotocol("emostt.v1") if "emostt.v1" in offered else None


@asynccontextmanager
async def closing_server(code: int) -> AsyncIterator[ClosingServer]:
    async with ClosingServer(FAULTS[code]).running() as server:
        yield server
