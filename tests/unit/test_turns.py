"""The turn worker: requests from many sessions run as batches on one supervised thread, the queue
is bounded, and a crash fails what it held (the thread restarting) instead of leaving anyone waiting."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import numpy as np
import pytest

from emostt.inference.smart_turn import pipecat_turn_model
from emostt.observability import metrics
from emostt.streaming.turns import TurnBatcher, TurnBusyError, TurnFailedError


class Harness(TurnBatcher):
    """The real worker; its model calls recorded, held back on ``gate``, or failed on demand."""

    def __init__(self, **bounds: Any) -> None:
        path = pipecat_turn_model()
        assert path is not None
        super().__init__(path, **bounds)
        self.batch_sizes: list[int] = []
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()
        self.fail_next = False

    def run_batch(self, audios: list[np.ndarray]) -> list[float]:
        self.entered.set()
        self.gate.wait(10)
        self.batch_sizes.append(len(audios))
        if self.fail_next:
            self.fail_next = False
            raise RuntimeError("injected model failure")
        return super().run_batch(audios)


def count(outcome: str) -> float:
    return float(metrics.TURN_CALLS.labels(outcome)._value.get())


@pytest.fixture
def clips(speech_16k: np.ndarray) -> list[np.ndarray]:
    rng = np.random.default_rng(1)
    return [speech_16k, speech_16k[: len(speech_16k) // 2], *(rng.standard_normal((6, 24_000)) * 0.05)]


def test_concurrent_requests_run_in_batches_with_their_own_answers(clips: list[np.ndarray]) -> None:
    turns = Harness(max_batch=4, max_pending=16)
    turns.start()
    alone = turns.run_batch(list(clips))  # the reference: one batch on this thread
    turns.batch_sizes.clear()
    turns.entered.clear()
    ok_before, timed_before = count("ok"), metrics.TURN_MODEL_SECONDS._sum.get()

    async def all_at_once() -> list[float]:
        turns.gate.clear()  # the first request holds the thread while the rest queue up
        first = asyncio.ensure_future(turns.probability(clips[0]))
        await asyncio.to_thread(turns.entered.wait, 10)
        rest = [asyncio.ensure_future(turns.probability(c)) for c in clips[1:]]
        await asyncio.sleep(0)
        turns.gate.set()
        return list(await asyncio.gather(first, *rest))

    try:
        probs = asyncio.run(all_at_once())
    finally:
        turns.stop()
    assert turns.batch_sizes == [1, 4, 3]  # batched across the callers, max_batch at most
    np.testing.assert_allclose(probs, alone, atol=1e-5)
    assert count("ok") - ok_before == len(clips)
    assert metrics.TURN_MODEL_SECONDS._sum.get() > timed_before


def test_a_full_queue_is_refused_at_once(clips: list[np.ndarray]) -> None:
    turns = Harness(max_batch=2, max_pending=2)
    turns.start()
    refused_before = count("refused")

    async def flood() -> tuple[list[float], BaseException]:
        turns.gate.clear()
        held = asyncio.ensure_future(turns.probability(clips[0]))  # taken by the thread
        await asyncio.to_thread(turns.entered.wait, 10)
        queued = [asyncio.ensure_future(turns.probability(c)) for c in clips[1:3]]
        await asyncio.sleep(0)
        with pytest.raises(TurnBusyError) as refused:
            await turns.probability(clips[3])
        turns.gate.set()
        return list(await asyncio.gather(held, *queued)), refused.value

    try:
        answered, error = asyncio.run(flood())
    finally:
        turns.stop()
    assert len(answered) == 3 and isinstance(error, TurnFailedError) and error.code == "turn_busy"
    assert count("refused") - refused_before == 1


def test_a_request_its_caller_stopped_waiting_for_leaves_the_queue(clips: list[np.ndarray]) -> None:
    """Speech resumed or the utterance ended: the queued question never reaches the model, and
    its place in the queue is free again."""
    turns = Harness(max_batch=4, max_pending=2)
    turns.start()
    withdrawn_before = count("withdrawn")

    async def withdraw_one() -> list[float]:
        turns.gate.clear()
        held = asyncio.ensure_future(turns.probability(clips[0]))  # taken by the thread
        await asyncio.to_thread(turns.entered.wait, 10)
        kept = asyncio.ensure_future(turns.probability(clips[1]))
        dropped = asyncio.ensure_future(turns.probability(clips[2]))
        await asyncio.sleep(0)  # both queued: the queue is full
        dropped.cancel()
        with pytest.raises(asyncio.CancelledError):
            await dropped
        late = asyncio.ensure_future(turns.probability(clips[3]))  # its place is free again
        await asyncio.sleep(0)
        turns.gate.set()
        return list(await asyncio.gather(held, kept, late))

    try:
        answered = asyncio.run(withdraw_one())
    finally:
        turns.stop()
    assert len(answered) == 3
    assert turns.batch_sizes == [1, 2]  # the withdrawn question was never run
    assert count("withdrawn") - withdrawn_before == 1


def test_a_crash_fails_held_and_waiting_requests_and_the_thread_restarts(clips: list[np.ndarray]) -> None:
    turns = Harness(max_batch=1, max_pending=8)
    turns.start()
    failed_before = count("failed")
    crashes_before = metrics.THREAD_CRASHES.labels("turn")._value.get()

    async def crash_then_recover() -> float:
        turns.gate.clear()
        turns.fail_next = True
        held = asyncio.ensure_future(turns.probability(clips[0]))
        await asyncio.to_thread(turns.entered.wait, 10)
        waiting = asyncio.ensure_future(turns.probability(clips[1]))
        await asyncio.sleep(0)
        turns.gate.set()
        for request in (held, waiting):
            with pytest.raises(TurnFailedError):
                await request
        return await turns.probability(clips[0])  # served by the restarted thread

    try:
        probability = asyncio.run(crash_then_recover())
    finally:
        turns.stop()
    assert 0.0 <= probability <= 1.0 and turns.failed is None
    assert count("failed") - failed_before == 2
    assert metrics.THREAD_CRASHES.labels("turn")._value.get() - crashes_before == 1


def test_a_stopped_worker_refuses_and_a_lost_answer_times_out(clips: list[np.ndarray]) -> None:
    stopped = Harness()
    stopped.start()
    stopped.stop()
    with pytest.raises(TurnFailedError, match="unavailable"):
        asyncio.run(stopped.probability(clips[0]))

    never = Harness(timeout_s=0.2)  # never started: nobody answers
    with pytest.raises(TurnFailedError, match="too long"):
        asyncio.run(never.probability(clips[0]))
