"""One session's connection: opening it within a ``ReconnectPolicy`` (each attempt is
``handshake.open_session``), and reading its events until it closes."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass

from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from emostt_client.errors import ConnectionFailedError, ServerClosedError
from emostt_client.handshake import Retry, open_session
from emostt_client.protocol import CLOSE_ABNORMAL, Error, Ready, ServerEvent, parse_message
from emostt_client.reconnect import ReconnectPolicy

__all__ = ["Closed", "open_with_retry", "read_until_closed"]


@dataclass(frozen=True)
class Closed:
    """How a session's connection ended: its close code (``CLOSE_ABNORMAL`` when no close frame
    came), the close reason, and the last ``error`` event the server sent before."""

    code: int
    reason: str
    error: Error | None


async def open_with_retry(
    url: str,
    headers: dict[str, str],
    open_timeout: float,
    policy: ReconnectPolicy,
    *,
    reconnecting: bool,
    cause: int | None = None,
) -> tuple[ClientConnection, Ready, int]:
    """An open session, its ``ready`` and the attempt that opened it. A first connection makes
    one attempt plus ``policy.max_attempts`` retries, at once; a reconnect (after a close with
    ``cause``) makes ``max_attempts``, each after its backoff. Raises ``AuthError`` or
    ``ServerClosedError`` at a refusal retrying cannot fix, ``ConnectionFailedError`` when the
    attempts run out."""
    total = policy.max_attempts + (0 if reconnecting else 1)
    off = f"the connection closed with {cause}; reconnecting is off"
    last = Retry(cause or CLOSE_ABNORMAL, None, off)
    for attempt in range(1, total + 1):
        backoff = attempt if reconnecting else attempt - 1
        if backoff:
            await asyncio.sleep(policy.delay(backoff))
        try:
            ws, ready = await open_session(url, headers, open_timeout)
        except Retry as exc:
            last = exc
            continue
        except ServerClosedError as exc:
            exc.attempts = attempt
            raise
        return ws, ready, attempt
    raise ConnectionFailedError(total, last.code, last.error, last.detail)


async def read_until_closed(ws: ClientConnection, deliver: Callable[[ServerEvent], None]) -> Closed:
    """Pass each event of ``ws`` to ``deliver`` until the connection closes; how it closed."""
    last_error: Error | None = None
    try:
        async for message in ws:
            event = parse_message(message)
            if isinstance(event, Error):
                last_error = event
            deliver(event)
    except ConnectionClosed:
        pass
    code = ws.close_code if ws.close_code is not None else CLOSE_ABNORMAL
    return Closed(code, ws.close_reason or "", last_error)
