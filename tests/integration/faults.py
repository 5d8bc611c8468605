"""Fault injection around a real engine: the only fake in the service tests."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence

from emostt.errors import OutOfMemoryError
from emostt.inference.engine import Engine, ModelInfo, TranscriptionRequest, TranscriptionResult


class FaultyEngine:
    """Wraps ``inner``; fails according to the mode, counting calls and batch sizes."""

    def __init__(
        self,
        inner: Engine,
        *,
        fail_first: int = 0,
        oom_above: int | None = None,
        always_fail: bool = False,
        delay_s: float = 0.0,
    ) -> None:
        self.inner = inner
        self.fail_first = fail_first
        self.oom_above = oom_above
        self.always_fail = always_fail
        self.delay_s = delay_s
        self.calls: list[int] = []
        self._lock = threading.Lock()

    @property
    def info(self) -> ModelInfo:
        return self.inner.info

    def transcribe(self, requests: Sequence[TranscriptionRequest]) -> list[TranscriptionResult]:
        with self._lock:
            self.calls.append(len(requests))
            call = len(self.calls)
        if self.delay_s:
            time.sleep(self.delay_s)
        if self.always_fail or call <= self.fail_first:
            raise RuntimeError(f"injected engine failure on call {call}")
        if self.oom_above is not None and len(requests) > self.oom_above:
            raise OutOfMemoryError(f"injected OOM on a batch of {len(requests)}")
        return self.inner.transcribe(requests)


class GatedEngine:
    """Holds every call until the test sets ``release`` (a stuck model); ``entered`` is set by
    the first call to arrive."""

    def __init__(self, inner: Engine, wait_s: float = 60.0) -> None:
        self.inner = inner
        self.wait_s = wait_s
        self.entered = threading.Event()
        self.release = threading.Event()

    @property
    def info(self) -> ModelInfo:
        return self.inner.info

    def transcribe(self, requests: Sequence[TranscriptionRequest]) -> list[TranscriptionResult]:
        self.entered.set()
        assert self.release.wait(self.wait_s), "the test never released the engine"
        return self.inner.transcribe(requests)
