"""How soon to reconnect: exponential backoff with jitter. Which closes are retried is the
protocol core's rule (``emostt_client.protocol``), re-exported here."""

from __future__ import annotations

import random
from dataclasses import dataclass

from emostt_client.protocol import RETRYABLE_CLOSE_CODES, is_retryable_close

__all__ = ["RETRYABLE_CLOSE_CODES", "ReconnectPolicy", "is_retryable_close"]


@dataclass(frozen=True)
class ReconnectPolicy:
    """How a stream reconnects after a retryable close or a network error.

    ``max_attempts`` bounds the connection attempts after each drop (and the retries of a failed
    first connection); 0 never reconnects. Attempt ``n`` waits
    ``min(max_delay, initial_delay * multiplier ** (n - 1))``, shortened by up to ``jitter``
    (a fraction) at random so that many devices dropped together do not come back together.
    The count starts again once a connection is open.
    """

    max_attempts: int = 6
    initial_delay: float = 0.5
    max_delay: float = 10.0
    multiplier: float = 2.0
    jitter: float = 0.5

    def __post_init__(self) -> None:
        if self.max_attempts < 0:
            raise ValueError("max_attempts must be >= 0")
        if self.initial_delay < 0 or self.max_delay < 0:
            raise ValueError("delays must be >= 0")
        if self.multiplier < 1:
            raise ValueError("multiplier must be >= 1")
        if not 0 <= self.jitter <= 1:
            raise ValueError("jitter must be within [0, 1]")

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        """Seconds to wait before attempt ``attempt`` (1-based)."""
        base = min(self.max_delay, self.initial_delay * self.multiplier ** min(64, max(0, attempt - 1)))
        draw = (rng or random).random()
        return base * (1.0 - self.jitter * draw)


NO_RECONNECT = ReconnectPolicy(max_attempts=0)
