"""Exceptions raised by the client. All derive from ``EmosttClientError``."""

from __future__ import annotations

from emostt_client.events import Error

__all__ = [
    "AuthError",
    "ConnectionFailedError",
    "EmosttClientError",
    "MissingDependencyError",
    "ServerClosedError",
    "StreamClosedError",
]


class EmosttClientError(Exception):
    """Base class of the client's exceptions."""


class ServerClosedError(EmosttClientError):
    """The server ended the session (or refused it) with a close code that retrying cannot fix:
    1008 policy (rate_limited, too_fast, invalid_config, ...), 1003, 1007, 1009, 4xxx, ..."""

    def __init__(
        self, close_code: int | None, reason: str = "", error: Error | None = None, attempts: int = 1
    ) -> None:
        self.close_code = close_code  # None when refused at the HTTP level (the reason says which status)
        self.reason = reason
        self.error = error  # the error event the server sent before closing, if any
        self.attempts = attempts  # connection attempts made before giving up
        detail = f"{error.code}: {error.message}" if error is not None else reason or "no reason given"
        how = "refused the connection" if close_code is None else f"closed the connection with {close_code}"
        super().__init__(f"the server {how} ({detail})")


class AuthError(ServerClosedError):
    """Refused by policy at the handshake (1008 unauthorized / origin_not_allowed /
    invalid_device_id, or HTTP 401/403): never retried."""


class ConnectionFailedError(EmosttClientError):
    """Could not (re)connect within the ``ReconnectPolicy``: ``attempts`` tries were made and the
    last one failed with ``close_code`` (1006 for a network error) or ``__cause__``."""

    def __init__(self, attempts: int, close_code: int | None, error: Error | None, detail: str) -> None:
        self.attempts = attempts
        self.close_code = close_code
        self.error = error
        super().__init__(f"could not connect after {attempts} attempt(s): {detail}")


class StreamClosedError(EmosttClientError):
    """The stream is closed (by ``close()`` or by the server with 1000): nothing more can be sent."""


class MissingDependencyError(EmosttClientError, ImportError):
    """An optional dependency is not installed; the message names the extra to install."""
