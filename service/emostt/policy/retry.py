"""Retry, batch splitting and fallback around engine calls.

Called by the batcher's model workers, possibly several at once (the breaker state is locked).
Every path is counted: ``emostt_retries_total{reason}``, ``emostt_fallbacks_total``, ``emostt_circuit_open``.
Engine exception text is logged here and never reaches a client: outcomes carry fixed messages.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from emostt.errors import EmosttError, InferenceError, InvalidAudioError, OutOfMemoryError
from emostt.inference.engine import Engine, TranscriptionRequest
from emostt.observability import metrics
from emostt.policy.outcome import Failed, Outcome, Served

log = logging.getLogger(__name__)

FATAL_MARKERS = ("illegal memory access", "device-side assert", "unspecified launch failure")


@dataclass(frozen=True)
class RetryConfig:
    max_retries: int = 2
    backoff_s: float = 0.05
    backoff_max_s: float = 1.0
    breaker_failures: int = 3
    breaker_cooldown_s: float = 30.0


class ResilientRunner:
    """Primary engine with retries and OOM splitting; a circuit breaker routes to the fallback."""

    def __init__(
        self,
        primary: Engine,
        fallback: Engine | None = None,
        config: RetryConfig | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.primary = primary
        self.fallback = fallback
        self.config = config or RetryConfig()
        self._sleep = sleep
        self._clock = clock
        self._breaker_lock = threading.Lock()
        self._consecutive_failures = 0
        self._open_until: float | None = None
        self.fatal_error: str | None = None  # set when the device is unusable: liveness fails

    @property
    def circuit_open(self) -> bool:
        return self._open_until is not None and self._clock() < self._open_until

    def run(self, requests: Sequence[TranscriptionRequest]) -> list[Outcome]:
        if self.fallback is not None and self.circuit_open:
            return self._run_fallback(requests, "circuit open")
        try:
            results = self._run_primary(requests)
        except EmosttError as exc:
            self._record_failure()
            if self.fallback is not None:
                return self._run_fallback(requests, exc.code)
            return [Failed(exc.code, _client_message(exc), exc.retryable)] * len(requests)
        self._record_success()
        return results

    def _run_primary(self, requests: Sequence[TranscriptionRequest]) -> list[Outcome]:
        cfg = self.config
        attempt = 0
        while True:
            out_of_memory = False
            try:
                return [Served(r) for r in self.primary.transcribe(requests)]
            except OutOfMemoryError:
                if len(requests) == 1:
                    raise
                out_of_memory = True
            except InvalidAudioError:
                if len(requests) == 1:
                    return [Failed(InvalidAudioError.code, "audio rejected by the model", False)]
                # One bad utterance must not fail the others: isolate it.
                metrics.RETRIES.labels("isolate").inc()
                return [out for r in requests for out in self._run_primary([r])]
            except Exception as exc:
                if any(marker in str(exc) for marker in FATAL_MARKERS):
                    self.fatal_error = str(exc)
                    log.critical("fatal device error; liveness will fail: %s", exc)
                log.warning(
                    "engine call failed (attempt %d of %d, batch of %d): %s: %s",
                    attempt + 1,
                    cfg.max_retries + 1,
                    len(requests),
                    type(exc).__name__,
                    exc,
                )
                if attempt >= cfg.max_retries or self.fatal_error:
                    raise _as_emostt_error(exc) from exc
                metrics.RETRIES.labels("error").inc()
                self._sleep(min(cfg.backoff_s * 2**attempt, cfg.backoff_max_s))
                attempt += 1
            if out_of_memory:
                # Split only once the except block is left: until then the exception's traceback
                # keeps the failed attempt's frames alive, and on a GPU the tensors they hold.
                metrics.RETRIES.labels("oom_split").inc()
                half = len(requests) // 2
                return self._run_primary(requests[:half]) + self._run_primary(requests[half:])

    def _run_fallback(self, requests: Sequence[TranscriptionRequest], why: str) -> list[Outcome]:
        assert self.fallback is not None
        metrics.FALLBACKS.inc()
        log.warning("serving a batch of %d on the fallback engine: %s", len(requests), why)
        try:
            return [Served(r, degraded=True) for r in self.fallback.transcribe(requests)]
        except Exception as exc:
            log.error(
                "the fallback engine failed too (batch of %d): %s: %s", len(requests), type(exc).__name__, exc
            )
            err = _as_emostt_error(exc)
            return [Failed(err.code, "the primary and fallback engines both failed", True)] * len(requests)

    def _record_failure(self) -> None:
        with self._breaker_lock:
            self._consecutive_failures += 1
            if self.fallback is not None and self._consecutive_failures >= self.config.breaker_failures:
                if not self.circuit_open:
                    log.warning(
                        "circuit breaker OPEN: %d consecutive failed batches; serving on the fallback "
                        "engine for %.0f s",
                        self._consecutive_failures,
                        self.config.breaker_cooldown_s,
                    )
                self._open_until = self._clock() + self.config.breaker_cooldown_s
                metrics.CIRCUIT_OPEN.set(1)

    def _record_success(self) -> None:
        with self._breaker_lock:
            self._consecutive_failures = 0
            if self._open_until is not None:
                self._open_until = None
                metrics.CIRCUIT_OPEN.set(0)
                log.warning("circuit breaker CLOSED: the primary engine serves again")


# Fixed client-facing messages per error code: exception text stays in the log.
CLIENT_MESSAGES = {
    "inference_failed": "the model failed on this utterance; resending may help",
    "out_of_memory": "the model ran out of memory on this utterance",
    "invalid_audio": "audio rejected by the model",
}


def _client_message(exc: EmosttError) -> str:
    return CLIENT_MESSAGES.get(exc.code, "the model could not transcribe this utterance")


def _as_emostt_error(exc: BaseException) -> EmosttError:
    if isinstance(exc, EmosttError):
        return exc
    return InferenceError(f"{type(exc).__name__}: {exc}")
