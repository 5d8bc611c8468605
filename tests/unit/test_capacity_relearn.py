"""The capacity estimate is re-learned when the engine switches backend while serving
(torch -> onnx): the cost measured on the old backend stops counting at the first batch
measured on the new one, and batches that ran on the old backend are not mixed in."""

from __future__ import annotations

import asyncio
import dataclasses
import threading
from collections.abc import Callable, Iterator, Sequence

import numpy as np
import pytest

from emostt.batching.batcher import Batcher, BatcherConfig
from emostt.batching.capacity import CapacityConfig, CapacityModel
from emostt.inference.engine import Distribution, ModelInfo, TranscriptionRequest, TranscriptionResult
from emostt.policy.retry import ResilientRunner

DIST = Distribution("x", {"x": 1.0})


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_restarted_cost_forgets_earlier_batches_and_keeps_demand() -> None:
    capacity = CapacityModel(CapacityConfig(), clock=Clock())
    capacity.record_batch(audio_s=10.0, model_s=5.0)  # torch: 0.5 model-s per audio-s
    capacity.record_demand(3.0)
    demand = capacity.demand
    capacity.record_batch(audio_s=10.0, model_s=0.5, restart=True)  # the first batch on onnx
    assert capacity.cost == pytest.approx(0.05)
    assert capacity.demand == pytest.approx(demand)
    capacity.record_batch(audio_s=10.0, model_s=1.5)
    assert capacity.cost == pytest.approx(0.1)


class SwitchingEngine:
    """An engine whose backend the test switches; ``during_call`` runs inside a transcribe call."""

    def __init__(self) -> None:
        self.info = ModelInfo("switching", "0", "cpu", "int8", backend="torch")
        self.during_call: Callable[[], None] | None = None

    def switch(self, backend: str) -> None:
        self.info = dataclasses.replace(self.info, backend=backend)

    def transcribe(self, requests: Sequence[TranscriptionRequest]) -> list[TranscriptionResult]:
        if self.during_call is not None:
            self.during_call()
        return [TranscriptionResult("t", DIST, DIST, DIST, 1.0, r.duration_ms) for r in requests]


class RecordingCapacity(CapacityModel):
    def __init__(self) -> None:
        super().__init__(CapacityConfig())
        self.recorded: list[tuple[float, bool]] = []
        self._recorded_lock = threading.Lock()

    def record_batch(self, audio_s: float, model_s: float, *, restart: bool = False) -> None:
        with self._recorded_lock:
            self.recorded.append((audio_s, restart))
        super().record_batch(audio_s, model_s, restart=restart)


def final(batcher: Batcher, seconds: float) -> None:
    request = TranscriptionRequest(np.zeros(int(seconds * 16_000), dtype=np.float32))
    asyncio.run(batcher.submit(request, is_final=True))


@pytest.fixture
def setup() -> Iterator[tuple[SwitchingEngine, Batcher, RecordingCapacity]]:
    engine = SwitchingEngine()
    batcher = Batcher(ResilientRunner(engine), BatcherConfig(workers=1))
    capacity = RecordingCapacity()
    batcher.capacity = capacity
    batcher.start()
    yield engine, batcher, capacity
    batcher.stop()


def test_the_first_batch_after_a_backend_switch_restarts_the_cost(
    setup: tuple[SwitchingEngine, Batcher, RecordingCapacity],
) -> None:
    engine, batcher, capacity = setup
    final(batcher, 1.0)
    final(batcher, 2.0)
    engine.switch("onnx")
    final(batcher, 3.0)
    final(batcher, 4.0)
    # The first batch ever starts from nothing anyway; on a switch the old cost is dropped.
    assert capacity.recorded == [(1.0, True), (2.0, False), (3.0, True), (4.0, False)]


def test_a_batch_that_ran_across_the_switch_is_not_measured(
    setup: tuple[SwitchingEngine, Batcher, RecordingCapacity],
) -> None:
    engine, batcher, capacity = setup
    final(batcher, 1.0)
    # The switch lands while this batch runs: its time is neither backend's cost.
    engine.during_call = lambda: engine.switch("onnx")
    final(batcher, 2.0)
    engine.during_call = None
    final(batcher, 3.0)
    assert capacity.recorded == [(1.0, True), (3.0, True)]
    assert batcher.capacity.cost is not None
