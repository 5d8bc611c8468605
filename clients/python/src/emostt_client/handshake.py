"""Opening a session: one connection attempt, and what a refusal means (the endpoint URL and the
close-code rules are the protocol core's, ``emostt_client.protocol``, re-exported here).

A refused connection is accepted by the server, sent one ``error`` event and closed with the
code that says whether to retry (docs/protocol.md); a connection that is admitted gets ``ready``.
"""

from __future__ import annotations

import asyncio

from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from emostt_client.errors import AuthError, EmosttClientError, ServerClosedError
from emostt_client.protocol import (
    AUTH_ERROR_CODES,
    CLOSE_ABNORMAL,
    CLOSE_OVERLOADED,
    CLOSE_POLICY,
    DEVICE_ID,
    Error,
    Ready,
    build_url,
    is_retryable_close,
    parse_message,
)

__all__ = ["CLOSE_ABNORMAL", "DEVICE_ID", "Retry", "build_url", "close_failure", "open_session"]

MAX_EVENT_BYTES = 4 * 1024 * 1024


class Retry(Exception):  # noqa: N818 - a signal: this attempt failed, another one may not
    def __init__(self, code: int, error: Error | None, detail: str) -> None:
        super().__init__(detail)
        self.code, self.error, self.detail = code, error, detail


async def open_session(
    url: str, headers: dict[str, str], open_timeout: float
) -> tuple[ClientConnection, Ready]:
    """One connection attempt: the open connection and its ``ready``; or ``Retry`` (another
    attempt may succeed), ``AuthError`` or ``ServerClosedError``."""
    try:
        ws = await ws_connect(
            url,
            additional_headers=headers,
            open_timeout=open_timeout,
            max_size=MAX_EVENT_BYTES,
        )
    except InvalidStatus as exc:
        status = exc.response.status_code
        if status in (401, 403):
            raise AuthError(None, f"HTTP {status}") from exc
        if status >= 500 or status == 429:
            raise Retry(CLOSE_OVERLOADED, None, f"HTTP {status}") from exc
        raise ServerClosedError(None, f"HTTP {status}") from exc
    except (OSError, asyncio.TimeoutError, InvalidHandshake) as exc:
        raise Retry(CLOSE_ABNORMAL, None, f"{type(exc).__name__}: {exc}") from exc
    try:
        first = await asyncio.wait_for(ws.recv(), open_timeout)
    except ConnectionClosed:
        first = None
    except asyncio.TimeoutError:
        await ws.close()
        raise Retry(CLOSE_ABNORMAL, None, "no ready event from the server") from None
    except asyncio.CancelledError:  # close() during a reconnect
        await ws.close()
        raise
    event = parse_message(first) if first is not None else None
    if isinstance(event, Ready):
        return ws, event
    # A refusal: the server sends one error event, then closes.
    try:
        await asyncio.wait_for(ws.wait_closed(), open_timeout)
    except asyncio.TimeoutError:
        await ws.close()
    code = ws.close_code if ws.close_code is not None else CLOSE_ABNORMAL
    error = event if isinstance(event, Error) else None
    if is_retryable_close(code):
        detail = f"{error.code}: {error.message}" if error else f"closed with {code}"
        raise Retry(code, error, detail)
    raise close_failure(code, ws.close_reason or "", error, attempts=1)


def close_failure(code: int, reason: str, error: Error | None, attempts: int) -> EmosttClientError:
    if code == CLOSE_POLICY and error is not None and error.code in AUTH_ERROR_CODES:
        return AuthError(code, reason, error, attempts)
    return ServerClosedError(code, reason, error, attempts)
