"""The retry policy with a scripted engine (fault injection) and a fake clock."""

from __future__ import annotations

import weakref
from collections.abc import Sequence

import numpy as np

from emostt.errors import InvalidAudioError, OutOfMemoryError
from emostt.inference.engine import Distribution, ModelInfo, TranscriptionRequest, TranscriptionResult
from emostt.policy.outcome import Failed, Served
from emostt.policy.retry import ResilientRunner, RetryConfig

DIST = Distribution("x", {"x": 1.0})


class Scripted:
    """Fails while ``broken`` is true; OOM above ``max_ok`` utterances; rejects empty audio."""

    info = ModelInfo("scripted", "0", "cpu", "fp32")

    def __init__(self, name: str, max_ok: int = 1000) -> None:
        self.name, self.max_ok, self.broken, self.calls = name, max_ok, False, 0

    def transcribe(self, requests: Sequence[TranscriptionRequest]) -> list[TranscriptionResult]:
        self.calls += 1
        if self.broken:
            raise RuntimeError("boom")
        if len(requests) > self.max_ok:
            raise OutOfMemoryError("oom")
        if any(len(r.audio) == 0 for r in requests):
            raise InvalidAudioError("empty")
        return [TranscriptionResult(self.name, DIST, DIST, DIST, 1.0, r.duration_ms) for r in requests]


def requests(n: int, empty: int | None = None) -> list[TranscriptionRequest]:
    return [TranscriptionRequest(np.zeros(0 if i == empty else 1600, dtype=np.float32)) for i in range(n)]


class Clock:
    now = 0.0

    def __call__(self) -> float:
        return self.now


def test_oom_splits_until_batches_fit() -> None:
    engine = Scripted("p", max_ok=2)
    out = ResilientRunner(engine, sleep=lambda s: None).run(requests(7))
    assert all(isinstance(o, Served) and not o.degraded for o in out) and len(out) == 7


def test_one_bad_utterance_fails_alone() -> None:
    out = ResilientRunner(Scripted("p"), sleep=lambda s: None).run(requests(4, empty=2))
    assert [type(o) for o in out] == [Served, Served, Failed, Served]
    assert isinstance(out[2], Failed) and out[2].code == "invalid_audio" and not out[2].retryable


def test_breaker_opens_then_closes_after_cooldown() -> None:
    primary, fallback, clock = Scripted("p"), Scripted("f"), Clock()
    runner = ResilientRunner(
        primary,
        fallback,
        RetryConfig(max_retries=1, breaker_failures=2, breaker_cooldown_s=10),
        sleep=lambda s: None,
        clock=clock,
    )
    primary.broken = True
    for _ in range(2):
        out = runner.run(requests(1))
        assert isinstance(out[0], Served) and out[0].degraded and out[0].result.text == "f"
    assert runner.circuit_open and primary.calls == 4
    runner.run(requests(1))
    assert primary.calls == 4, "an open breaker skips the primary"
    primary.broken = False
    clock.now = 11.0
    out = runner.run(requests(1))
    assert isinstance(out[0], Served) and not out[0].degraded and not runner.circuit_open


def test_without_fallback_failures_are_reported_retryable() -> None:
    primary = Scripted("p")
    primary.broken = True
    sleeps: list[float] = []
    out = ResilientRunner(primary, config=RetryConfig(max_retries=3, backoff_s=0.1), sleep=sleeps.append).run(
        requests(2)
    )
    assert all(isinstance(o, Failed) and o.retryable and o.code == "inference_failed" for o in out)
    assert sleeps == [0.1, 0.2, 0.4]  # exponential backoff


def test_fatal_device_errors_mark_the_runner() -> None:
    class Dead(Scripted):
        def transcribe(self, requests: Sequence[TranscriptionRequest]) -> list[TranscriptionResult]:
            raise RuntimeError("CUDA error: an illegal memory access was encountered")

    runner = ResilientRunner(Dead("d"), sleep=lambda s: None)
    assert isinstance(runner.run(requests(1))[0], Failed)
    assert runner.fatal_error is not None and "illegal memory access" in runner.fatal_error


class HoldsActivations(Scripted):
    """Out of memory above ``max_ok`` with a large array alive in the failing call's frame (on a
    GPU: the activations of the attempt that ran out). Records whether that array still
    existed when the split halves ran."""

    def __init__(self, max_ok: int) -> None:
        super().__init__("holds", max_ok)
        self.failed_attempt: list[weakref.ref[np.ndarray]] = []
        self.alive_during_split: list[bool] = []

    def transcribe(self, requests: Sequence[TranscriptionRequest]) -> list[TranscriptionResult]:
        self.alive_during_split += [ref() is not None for ref in self.failed_attempt]
        if len(requests) > self.max_ok:
            activations = np.ones(1_000_000, dtype=np.float32)
            self.failed_attempt.append(weakref.ref(activations))
            raise OutOfMemoryError("oom")
        return super().transcribe(requests)


def test_an_out_of_memory_batch_is_split_only_after_the_failed_attempt_is_released() -> None:
    engine = HoldsActivations(max_ok=2)
    outcomes = ResilientRunner(engine).run(requests(8))
    assert all(isinstance(o, Served) for o in outcomes)
    assert engine.failed_attempt, "the batch ran out of memory first"
    assert engine.alive_during_split and not any(engine.alive_during_split), (
        "the halves ran while a failed attempt's memory was still referenced"
    )
