"""Results on Redis Streams, for a dialogue engine that is not the socket's owner.

With ``results_redis_url`` set, every ``final`` and ``emotion_changed`` event a session sends is
also appended to the stream ``<prefix><device_id>`` (default ``emostt:results:<device_id>``)
as one field, ``event``, holding the event's JSON. Any number of consumers on any replica read
it with XREAD or consumer groups; ``MAXLEN ~ results_stream_maxlen`` trims it.

The device's own results never wait for Redis: ``offer()`` only appends to a bounded in-memory
buffer, and one background task writes the buffer out in pipelined batches, in order. While
Redis is unreachable the task retries with capped exponential backoff and the buffer holds what
arrives; when it is full the oldest events are dropped (a dialogue engine wants the recent
state), counted and logged once per outage. Every event ends up counted in
``emostt_results_published_total{outcome}``: ``published`` or ``dropped``; each failed write
of an event counts ``retried``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson

from emostt.observability import metrics

if TYPE_CHECKING:
    import redis.asyncio as redis_async

log = logging.getLogger(__name__)

PUBLISHED_EVENT_TYPES = frozenset({"final", "emotion_changed"})
EVENT_FIELD = "event"
# Events written per pipeline round trip.
BATCH_LIMIT = 256


@dataclass(frozen=True)
class PublisherConfig:
    url: str
    stream_prefix: str = "emostt:results:"
    maxlen: int = 10_000
    buffer_size: int = 10_000
    backoff_initial_s: float = 0.1
    backoff_max_s: float = 5.0
    # Time given to write out the buffer at shutdown before the rest counts as dropped.
    flush_timeout_s: float = 2.0


@dataclass(frozen=True)
class _Pending:
    stream: str
    payload: bytes


class ResultsPublisher:
    """Appends session events to Redis Streams in the background; see the module docstring."""

    def __init__(self, config: PublisherConfig, client: redis_async.Redis | None = None) -> None:
        # Imported here: redis costs a server that publishes nothing half a second of start-up.
        from redis.asyncio import Redis
        from redis.exceptions import RedisError

        self.config = config
        self._errors: tuple[type[Exception], ...] = (RedisError, OSError)
        self._client = client or Redis.from_url(
            config.url, socket_connect_timeout=2.0, socket_timeout=5.0, health_check_interval=30
        )
        self._buffer: deque[_Pending] = deque()
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._dropping = False  # inside an overflow episode: log once
        self._failing = False  # inside an outage: log once

    @property
    def buffered(self) -> int:
        return len(self._buffer)

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="results-publisher")

    def offer(self, device_id: str, event: Mapping[str, Any]) -> None:
        """Queue ``event`` for the device's stream if it is one that is published. Never blocks."""
        if event.get("type") not in PUBLISHED_EVENT_TYPES or self._closing:
            return
        payload = orjson.dumps({**event, "device_id": device_id})
        if len(self._buffer) >= self.config.buffer_size:
            self._buffer.popleft()
            metrics.RESULTS_PUBLISHED.labels("dropped").inc()
            if not self._dropping:
                self._dropping = True
                log.warning(
                    "results buffer full: dropping the oldest events until Redis catches up",
                    extra={"buffer_size": self.config.buffer_size},
                )
        self._buffer.append(_Pending(self.config.stream_prefix + device_id, payload))
        self._wakeup.set()

    async def close(self) -> None:
        """Write out what is buffered (bounded by ``flush_timeout_s``), then stop."""
        self._closing = True
        self._wakeup.set()
        if self._task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._task), self.config.flush_timeout_s)
            except asyncio.TimeoutError:
                self._task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._task
        if self._buffer:
            log.warning("results not published at shutdown", extra={"dropped": len(self._buffer)})
            metrics.RESULTS_PUBLISHED.labels("dropped").inc(len(self._buffer))
            self._buffer.clear()
        with contextlib.suppress(*self._errors):
            await self._client.aclose()

    async def _run(self) -> None:
        delay = self.config.backoff_initial_s
        while True:
            if not self._buffer:
                if self._closing:
                    return
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            batch = [self._buffer[i] for i in range(min(BATCH_LIMIT, len(self._buffer)))]
            try:
                await self._write(batch)
            except self._errors as exc:
                metrics.RESULTS_PUBLISHED.labels("retried").inc(len(batch))
                if not self._failing:
                    self._failing = True
                    log.warning(
                        "publishing results to Redis failed; retrying with backoff",
                        extra={"error": f"{type(exc).__name__}: {exc}", "buffered": len(self._buffer)},
                    )
                if self._closing:
                    return
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._wakeup_on_close(), delay)
                delay = min(delay * 2, self.config.backoff_max_s)
                continue
            # Written: drop exactly those from the head (offer() may have dropped some of them
            # meanwhile if the buffer overflowed, so compare by identity).
            for pending in batch:
                if self._buffer and self._buffer[0] is pending:
                    self._buffer.popleft()
            metrics.RESULTS_PUBLISHED.labels("published").inc(len(batch))
            if self._failing:
                log.info("publishing results to Redis again", extra={"buffered": len(self._buffer)})
            self._failing = False
            self._dropping = False
            delay = self.config.backoff_initial_s

    async def _wakeup_on_close(self) -> None:
        while not self._closing:
            self._wakeup.clear()
            await self._wakeup.wait()

    async def _write(self, batch: list[_Pending]) -> None:
        async with self._client.pipeline(transaction=False) as pipe:
            for pending in batch:
                pipe.xadd(
                    pending.stream,
                    {EVENT_FIELD: pending.payload},
                    maxlen=self.config.maxlen,
                    approximate=True,
                )
            await pipe.execute()
