"""Capacity learned from measured cost and demand, on a manual clock."""

from __future__ import annotations

import math

import pytest

from emostt.batching.capacity import CapacityConfig, CapacityModel
from emostt.observability import metrics


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def model(clock: Clock, **config: float) -> CapacityModel:
    return CapacityModel(CapacityConfig(**config), clock=clock)  # type: ignore[arg-type]


def test_no_estimate_before_the_first_measured_batch() -> None:
    capacity = model(Clock())
    assert capacity.capacity_sessions() is None
    assert math.isnan(metrics.CAPACITY_SESSIONS._value.get())
    assert capacity.utilization() == 0.0


def test_capacity_is_workers_times_target_over_cost_times_demand() -> None:
    clock = Clock()
    capacity = model(clock, workers=2, target_utilization=0.5, demand_prior=1.0)
    capacity.record_batch(audio_s=10.0, model_s=0.5)  # 0.05 model-s per audio-s
    assert capacity.cost == pytest.approx(0.05)
    # Unmeasured demand: the prior (continuous speech).
    assert capacity.capacity_sessions() == pytest.approx(2 * 0.5 / 0.05)
    assert metrics.CAPACITY_SESSIONS._value.get() == pytest.approx(20.0)


def test_measured_demand_replaces_the_prior() -> None:
    clock = Clock()
    capacity = model(clock, workers=1, target_utilization=1.0, demand_prior=1.0, halflife_s=60.0)
    capacity.record_batch(audio_s=1.0, model_s=0.1)
    capacity.set_sessions(10)
    for _ in range(600):  # ten sessions, each speaking a quarter of the time, for ten minutes
        clock.now += 1.0
        capacity.record_demand(10 * 0.25)
    # The prior keeps a minute of pseudo-evidence against ~14 decayed minutes of real evidence.
    assert 0.25 < capacity.demand < 0.32
    assert capacity.capacity_sessions() == pytest.approx(1 / (0.1 * capacity.demand))
    assert capacity.utilization() == pytest.approx(10 / capacity.capacity_sessions())


def test_cost_follows_recent_batches() -> None:
    clock = Clock()
    capacity = model(clock, halflife_s=10.0)
    capacity.record_batch(audio_s=1.0, model_s=1.0)
    clock.now += 100.0  # ten half-lives later the old measurement hardly counts
    capacity.record_batch(audio_s=1.0, model_s=0.1)
    assert capacity.cost == pytest.approx(0.1, rel=0.01)


def test_zero_cost_batches_give_no_estimate_instead_of_dividing_by_zero() -> None:
    capacity = model(Clock())
    capacity.record_batch(audio_s=1.0, model_s=0.0)
    assert capacity.capacity_sessions() is None
    capacity.record_batch(audio_s=0.0, model_s=1.0)  # empty audio is ignored
    assert capacity.capacity_sessions() is None
