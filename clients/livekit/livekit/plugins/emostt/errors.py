"""emostt's closes and HTTP answers as the framework's errors: their ``retryable`` drives the
framework's retry loop (the stream's ``conn_options``), so it carries the protocol core's rule."""

from __future__ import annotations

import json

from emostt_client.protocol import AUTH_ERROR_CODES, CLOSE_ABNORMAL, Error, reconnects_after
from livekit.agents import APIConnectionError, APIError, APIStatusError

__all__ = ["close_error", "http_error"]


def close_error(code: int | None, error: Error | None, what: str) -> APIError:
    """A close the plugin did not ask for (``None``: no close frame), after the server's last
    session ``error`` event if any."""
    code = code if code is not None else CLOSE_ABNORMAL
    detail = f"{error.code}: {error.message}" if error else "no error event"
    message = f"{what} (close {code}, {detail})"
    if code == CLOSE_ABNORMAL:
        return APIConnectionError(message)
    # An agent's stream outlives emostt's sessions: the core's exception for such streams makes
    # a 1000 the plugin did not ask for (idle_timeout, session_too_long) open the next session.
    retryable = reconnects_after(code, requested=False, outlives_sessions=True)
    if error is not None and error.code in AUTH_ERROR_CODES:
        retryable = False
    body = dict(error.raw) if error else None
    return APIStatusError(message, status_code=code, body=body, retryable=retryable)


def http_error(status: int, body: bytes, request_id: str | None) -> APIStatusError:
    """A REST answer other than 200."""
    message = f"emostt answered {status}"
    parsed: object = None
    try:
        parsed = json.loads(body)
        if isinstance(parsed, dict) and isinstance(parsed.get("error"), dict):
            message = f"{message}: {parsed['error'].get('message')}"
    except ValueError:
        parsed = body[:200].decode(errors="replace")
    # 4xx but 408/429 are final (APIStatusError decides); 5xx and 429 are retried
    return APIStatusError(message, status_code=status, request_id=request_id, body=parsed)
