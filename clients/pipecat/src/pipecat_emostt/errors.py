"""emostt's refusals and error codes as Pipecat errors: which are permanent (the protocol core's
reconnect rule decides) and which ``ErrorCategory`` each has."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from emostt_client.protocol import reconnects_after
from pipecat.utils.errors import ErrorCategory

__all__ = ["EmosttRefusedError", "category_of"]

# Handshake and session error codes -> Pipecat's error categories. AUTHENTICATION,
# AUTHORIZATION and INVALID_REQUEST are permanent: the service becomes unusable.
_CATEGORIES: Final = {
    "unauthorized": ErrorCategory.AUTHENTICATION,
    "origin_not_allowed": ErrorCategory.AUTHORIZATION,
    "invalid_device_id": ErrorCategory.INVALID_REQUEST,
    "invalid_config": ErrorCategory.INVALID_REQUEST,
    "too_many_connections": ErrorCategory.RATE_LIMIT,
    "rate_limited": ErrorCategory.RATE_LIMIT,
    "too_fast": ErrorCategory.RATE_LIMIT,
    "overloaded": ErrorCategory.SERVER,
    "not_ready": ErrorCategory.SERVER,
    "shutting_down": ErrorCategory.SERVER,
    "internal_error": ErrorCategory.SERVER,
    "inference_failed": ErrorCategory.SERVER,
    "out_of_memory": ErrorCategory.SERVER,
    "vad_failed": ErrorCategory.SERVER,
    # semantic turns asked of a server without a turn model: the session goes on with silence turns
    "turn_model_unavailable": ErrorCategory.SERVER,
}


def category_of(code: str) -> ErrorCategory:
    """The Pipecat category of an emostt error code (``UNKNOWN`` for codes not listed)."""
    return _CATEGORIES.get(code, ErrorCategory.UNKNOWN)


class EmosttRefusedError(ConnectionError):
    """The server refused the session: its ``error`` event (and the close code that followed)."""

    def __init__(self, event: Mapping[str, Any], close_code: int | None = None) -> None:
        self.code = str(event.get("code", "unknown"))
        self.retryable = bool(event.get("retryable", False))
        self.close_code = close_code
        self.event = dict(event)
        super().__init__(f"{self.code}: {event.get('message', '')}".rstrip(": "))

    @property
    def permanent(self) -> bool:
        """Retrying cannot help: not retryable, or closed with a code the service does not
        reconnect after (1008 policy, ...)."""
        if self.close_code is not None and not reconnects_after(
            self.close_code, requested=False, outlives_sessions=True
        ):
            return True
        return not self.retryable

    @property
    def category(self) -> ErrorCategory:
        return category_of(self.code)
