"""The batcher under load, with a slow scripted engine (fault injection: latency)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Sequence

import numpy as np
import pytest

from emostt.batching.batcher import Batcher, BatcherConfig, BatcherFullError
from emostt.inference.engine import Distribution, ModelInfo, TranscriptionRequest, TranscriptionResult
from emostt.policy.retry import Failed, ResilientRunner, Served

DIST = Distribution("x", {"x": 1.0})


class Slow:
    info = ModelInfo("slow", "0", "cpu", "fp32")

    def __init__(self, delay_s: float) -> None:
        self.delay_s = delay_s
        self.batches: list[list[int]] = []

    def transcribe(self, requests: Sequence[TranscriptionRequest]) -> list[TranscriptionResult]:
        self.batches.append([len(r.audio) for r in requests])
        time.sleep(self.delay_s)
        return [TranscriptionResult("t", DIST, DIST, DIST, 1.0, r.duration_ms) for r in requests]


def request(samples: int) -> TranscriptionRequest:
    return TranscriptionRequest(np.zeros(samples, dtype=np.float32))


def make(engine: Slow, **config: float) -> Batcher:
    batcher = Batcher(ResilientRunner(engine), BatcherConfig(**config))  # type: ignore[arg-type]
    batcher.start()
    return batcher


def test_finals_jump_ahead_of_waiting_partials() -> None:
    engine = Slow(0.05)
    batcher = make(engine, max_batch_size=2, partial_deadline_s=10.0)

    async def scenario() -> list[str]:
        order: list[str] = []

        async def job(name: str, final: bool) -> None:
            await batcher.submit(request(1600 if final else 3200), is_final=final)
            order.append(name)

        first = asyncio.create_task(job("p0", False))
        await asyncio.sleep(0.01)  # p0 is running; everything below waits
        partials = [asyncio.create_task(job(f"p{i}", False)) for i in range(1, 7)]
        await asyncio.sleep(0.005)
        final = asyncio.create_task(job("final", True))
        await asyncio.gather(first, final, *partials)
        return order

    order = asyncio.run(scenario())
    batcher.stop()
    assert order.index("final") <= 2, order  # p0, then the final's batch
    assert 1600 in engine.batches[1], "the batch after p0 holds the final"


def test_idle_server_does_not_wait_and_busy_server_batches() -> None:
    engine = Slow(0.1)
    # A long wait setting makes the difference unmistakable: waiting when idle would cost a second.
    batcher = make(engine, max_batch_size=8, max_wait_s=1.0)

    async def scenario() -> float:
        started = time.perf_counter()
        await batcher.submit(request(1600), is_final=True)
        alone = time.perf_counter() - started
        await asyncio.gather(*(batcher.submit(request(1600), is_final=True) for _ in range(12)))
        return alone

    alone = asyncio.run(scenario())
    batcher.stop()
    assert alone < 0.6, "an idle batcher starts at once instead of waiting max_wait_s"
    assert max(len(b) for b in engine.batches) > 1


def test_stale_partials_are_shed_and_overload_is_signalled() -> None:
    engine = Slow(0.3)
    batcher = make(engine, max_batch_size=1, partial_deadline_s=0.2, overload_wait_s=0.1, max_waiting=64)

    async def scenario() -> tuple[list, bool, float]:
        finals = [asyncio.create_task(batcher.submit(request(1600), is_final=True)) for _ in range(4)]
        partials = [asyncio.create_task(batcher.submit(request(1600), is_final=False)) for _ in range(6)]
        outcomes = await asyncio.gather(*finals, *partials)
        return outcomes, batcher.overloaded, batcher.partial_interval_scale

    outcomes, overloaded, scale = asyncio.run(scenario())
    batcher.stop()
    assert all(isinstance(o, Served) for o in outcomes[:4]), "finals are never shed"
    shed = [o for o in outcomes[4:] if isinstance(o, Failed)]
    assert shed and all(o.code == "partial_shed" for o in shed)
    assert overloaded and scale > 1.0


def test_waiting_list_is_bounded() -> None:
    engine = Slow(0.2)
    batcher = make(engine, max_batch_size=1, max_waiting=3)

    async def scenario() -> None:
        tasks = [asyncio.create_task(batcher.submit(request(1600), is_final=True))]
        await asyncio.sleep(0.05)  # the first is running; three more fill the waiting list
        tasks += [asyncio.create_task(batcher.submit(request(1600), is_final=True)) for _ in range(3)]
        await asyncio.sleep(0.01)
        with pytest.raises(BatcherFullError):
            await batcher.submit(request(1600), is_final=True)
        await asyncio.gather(*tasks)

    asyncio.run(scenario())
    batcher.stop()


class Recording(Slow):
    """Records how many batches of each kind run at the same time."""

    def __init__(self, delay_s: float) -> None:
        super().__init__(delay_s)
        self.running: list[str] = []
        self.threads: list[tuple[str, str]] = []
        self.overlaps: list[tuple[str, ...]] = []

    def transcribe(self, requests: Sequence[TranscriptionRequest]) -> list[TranscriptionResult]:
        kind = "final" if len(requests[0].audio) == 1600 else "partial"
        self.threads.append((kind, threading.current_thread().name))
        self.running.append(kind)
        self.overlaps.append(tuple(sorted(self.running)))
        try:
            return super().transcribe(requests)
        finally:
            self.running.remove(kind)


def test_workers_run_batches_side_by_side_and_one_stays_off_partials() -> None:
    engine = Recording(0.1)
    batcher = make(engine, workers=3, max_batch_size=1, partial_deadline_s=10.0)

    async def scenario() -> None:
        partials = [asyncio.create_task(batcher.submit(request(3200), is_final=False)) for _ in range(6)]
        await asyncio.sleep(0.03)  # two workers are on partials now; the third must stay free
        await batcher.submit(request(1600), is_final=True)
        await asyncio.gather(*partials)

    asyncio.run(scenario())
    batcher.stop()
    assert max(o.count("partial") for o in engine.overlaps) == 2, "at most workers-1 on partials"
    assert ("final", "partial", "partial") in engine.overlaps, "the final ran beside two partial batches"


def test_partial_workers_take_partials_only_and_final_workers_finals_only() -> None:
    engine = Recording(0.02)
    batcher = make(engine, workers=2, partial_workers=1, max_batch_size=2, partial_deadline_s=10.0)

    async def scenario() -> None:
        jobs = [batcher.submit(request(1600 if i % 3 else 3200), is_final=bool(i % 3)) for i in range(24)]
        await asyncio.gather(*jobs)

    asyncio.run(scenario())
    batcher.stop()
    assert {kind for kind, _ in engine.threads} == {"final", "partial"}
    for kind, thread in engine.threads:
        assert thread.endswith(f"-{kind}"), (kind, thread)
    assert len({thread for kind, thread in engine.threads if kind == "final"}) == 2, "both final workers ran"
