"""The batcher's scheduling, shedding, overload signal and worker supervision.

The engine here is gated (fault injection: it holds each call until the test releases it),
and the batcher's clock is a manual one, so every ordering below is decided by the test,
never by sleeps.
"""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pytest

from emostt.batching.batcher import Batcher, BatcherConfig, BatcherFullError
from emostt.inference.engine import Distribution, ModelInfo, TranscriptionRequest, TranscriptionResult
from emostt.inference.lone_call import is_lone_call, widen_this_call
from emostt.observability import metrics
from emostt.policy.outcome import Failed, Outcome, Served
from emostt.policy.retry import ResilientRunner

DIST = Distribution("x", {"x": 1.0})
FINAL, PARTIAL = 1600, 3200  # audio lengths tell the kinds apart in the engine's records
WAIT_S = 10.0  # a generous bound on hand-offs between threads; a hang fails the test instead of blocking it


@dataclass
class Call:
    lengths: list[int]
    thread: str
    alone: bool  # what the engine was told: may this call use every core (lone_call.py)
    release: threading.Event = field(default_factory=threading.Event)


class GatedEngine:
    """Each ``transcribe`` call is announced on ``calls`` and blocks until released
    (``auto_release`` lets every call through at once)."""

    info = ModelInfo("gated", "0", "cpu", "fp32")

    def __init__(self, auto_release: bool = False, short_results: bool = False, widens: bool = False) -> None:
        self.calls: queue.Queue[Call] = queue.Queue()
        self.widens = widens  # runs lone calls on every core, as the ONNX encoder's wide session does
        self.history: list[Call] = []
        self.auto_release = auto_release
        self.short_results = short_results  # a buggy engine: one result too few

    def transcribe(self, requests: Sequence[TranscriptionRequest]) -> list[TranscriptionResult]:
        call = Call([len(r.audio) for r in requests], threading.current_thread().name, is_lone_call())
        if call.alone and self.widens:
            widen_this_call()
        self.history.append(call)
        self.calls.put(call)
        if not self.auto_release:
            assert call.release.wait(WAIT_S), "the test never released this call"
        results = [TranscriptionResult("t", DIST, DIST, DIST, 1.0, r.duration_ms) for r in requests]
        return results[:-1] if self.short_results else results

    async def next_call(self) -> Call:
        return await asyncio.to_thread(self.calls.get, timeout=WAIT_S)


class ManualClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def request(samples: int) -> TranscriptionRequest:
    return TranscriptionRequest(np.zeros(samples, dtype=np.float32))


def make(engine: GatedEngine, clock: ManualClock | None = None, **config: object) -> Batcher:
    batcher = Batcher(
        ResilientRunner(engine),
        BatcherConfig(**config),  # type: ignore[arg-type]
        clock=clock or ManualClock(),
    )
    batcher.start()
    return batcher


def submit(batcher: Batcher, samples: int, *, final: bool) -> asyncio.Task[Outcome]:
    return asyncio.ensure_future(batcher.submit(request(samples), is_final=final))


async def queued() -> None:
    """Let the tasks created so far run up to their wait for a result (they are then queued)."""
    await asyncio.sleep(0)


def test_finals_jump_ahead_of_waiting_partials() -> None:
    engine = GatedEngine()
    batcher = make(engine, max_batch_size=2, partial_deadline_s=10.0)

    async def scenario() -> None:
        first = submit(batcher, PARTIAL, final=False)
        running = await engine.next_call()
        partials = [submit(batcher, PARTIAL, final=False) for _ in range(6)]
        final = submit(batcher, FINAL, final=True)
        await queued()
        running.release.set()
        second = await engine.next_call()
        assert FINAL in second.lengths, "the batch after the running one holds the final"
        second.release.set()
        engine.auto_release = True
        while not engine.calls.empty():
            engine.calls.get().release.set()
        outcomes = await asyncio.gather(first, final, *partials)
        assert all(isinstance(o, Served) for o in outcomes)

    asyncio.run(scenario())
    batcher.stop()


def test_idle_batcher_starts_at_once_and_busy_batcher_batches() -> None:
    engine = GatedEngine()
    # Waiting for company when idle would hold the first call for a minute: next_call would time out.
    batcher = make(engine, max_batch_size=8, max_wait_s=60.0)

    async def scenario() -> None:
        alone = submit(batcher, FINAL, final=True)
        call = await engine.next_call()
        assert call.lengths == [FINAL]
        rest = [submit(batcher, FINAL, final=True) for _ in range(16)]  # two full batches
        await queued()
        call.release.set()
        engine.auto_release = True
        batch = await engine.next_call()
        batch.release.set()
        await asyncio.gather(alone, *rest)
        assert len(batch.lengths) == 8, "the utterances that queued while busy share one batch"

    asyncio.run(scenario())
    batcher.stop()


def test_a_batch_runs_alone_only_when_no_other_runs_or_waits() -> None:
    engine = GatedEngine(widens=True)
    batcher = make(engine, workers=2, max_batch_size=1)

    async def scenario() -> None:
        alone = submit(batcher, FINAL, final=True)
        lone = await engine.next_call()
        assert lone.alone, "an idle server gives a lone utterance every core"
        lone.release.set()
        assert isinstance(await alone, Served)
        # It had every core: not what a batch costs under load, which admission needs.
        assert batcher.capacity.cost is None
        first = submit(batcher, FINAL, final=True)
        running = await engine.next_call()
        beside = submit(batcher, FINAL, final=True)
        second = await engine.next_call()
        assert not second.alone, "another batch is running"
        queued_up = [submit(batcher, FINAL, final=True) for _ in range(2)]
        await queued()
        running.release.set()
        third = await engine.next_call()
        assert not third.alone, "another batch runs and one waits"
        second.release.set()
        fourth = await engine.next_call()
        assert not fourth.alone, "another batch is running"
        third.release.set()
        fourth.release.set()
        assert all(isinstance(o, Served) for o in await asyncio.gather(first, beside, *queued_up))
        assert batcher.capacity.cost is not None, "the batches that shared the cores are measured"
        last = submit(batcher, FINAL, final=True)
        again = await engine.next_call()
        assert again.alone, "idle again"
        again.release.set()
        assert isinstance(await last, Served)

    asyncio.run(scenario())
    batcher.stop()


def test_a_batch_runs_alone_only_while_the_open_sessions_leave_the_model_mostly_idle() -> None:
    """Under streaming load another batch would often start during a wide call and contend with it."""
    engine = GatedEngine(auto_release=True, widens=True)
    batcher = make(engine, workers=2, session_demand_prior=1.0, lone_call_max_load=0.25)
    batcher.capacity.record_batch(audio_s=1.0, model_s=0.1)  # 0.1 model-s per audio-s

    async def scenario() -> None:
        for sessions in (4, 6, 0):  # expected load 4 x 0.1 x 1.0 / 2 workers = 0.2, then 0.3, then 0
            batcher.capacity.set_sessions(sessions)
            assert isinstance(await submit(batcher, FINAL, final=True), Served)

    asyncio.run(scenario())
    batcher.stop()
    assert [call.alone for call in engine.history] == [True, False, True]


def test_with_lone_calls_off_every_batch_runs_as_under_load() -> None:
    """The warm-up measures a worker's own cost this way, before the server is ready."""
    engine = GatedEngine(auto_release=True, widens=True)
    batcher = make(engine, workers=1)
    batcher.lone_calls = False

    async def scenario() -> None:
        assert isinstance(await submit(batcher, FINAL, final=True), Served)

    asyncio.run(scenario())
    batcher.stop()
    assert not engine.history[0].alone and batcher.capacity.cost is not None


def test_a_lone_batch_that_did_not_widen_is_measured() -> None:
    """An engine with nothing wider to run on (one core, a GPU) costs the same alone."""
    engine = GatedEngine(auto_release=True)
    batcher = make(engine, workers=2)

    async def scenario() -> None:
        assert isinstance(await submit(batcher, FINAL, final=True), Served)

    asyncio.run(scenario())
    batcher.stop()
    assert engine.history[0].alone and batcher.capacity.cost is not None


def test_stale_partials_are_shed_and_the_overload_signal_decays() -> None:
    engine = GatedEngine()
    clock = ManualClock()
    batcher = make(engine, clock, max_batch_size=1, partial_deadline_s=0.2, overload_wait_s=0.3)

    async def scenario() -> None:
        running = submit(batcher, FINAL, final=True)
        call = await engine.next_call()
        finals = [submit(batcher, FINAL, final=True) for _ in range(3)]
        partials = [submit(batcher, PARTIAL, final=False) for _ in range(4)]
        await queued()
        assert batcher.admission() is None
        clock.now += 1.0  # finals have now waited a second: overload, partials stale
        assert batcher.admission() == "overloaded"
        assert batcher.partial_interval_scale == 4.0
        call.release.set()
        engine.auto_release = True
        outcomes = await asyncio.gather(running, *finals, *partials)
        assert all(isinstance(o, Served) for o in outcomes[:4]), "finals are never shed"
        assert all(isinstance(o, Failed) and o.code == "partial_shed" for o in outcomes[4:])
        # The last final waited a second: still overloaded right after, and not 5 s later.
        assert batcher.admission() == "overloaded"
        clock.now += 5.0
        assert batcher.admission() is None, "the signal decays once finals stop waiting"
        assert batcher.partial_interval_scale == 1.0

    asyncio.run(scenario())
    batcher.stop()


def test_waiting_list_is_bounded() -> None:
    engine = GatedEngine()
    batcher = make(engine, max_batch_size=1, max_waiting=3)

    async def scenario() -> None:
        tasks = [submit(batcher, FINAL, final=True)]
        call = await engine.next_call()
        tasks += [submit(batcher, FINAL, final=True) for _ in range(3)]
        await queued()
        with pytest.raises(BatcherFullError):
            await batcher.submit(request(FINAL), is_final=True)
        engine.auto_release = True
        call.release.set()
        assert all(isinstance(o, Served) for o in await asyncio.gather(*tasks))

    asyncio.run(scenario())
    batcher.stop()


def test_workers_run_batches_side_by_side_and_one_stays_off_partials() -> None:
    engine = GatedEngine()
    batcher = make(engine, workers=3, max_batch_size=1, partial_deadline_s=10.0)

    async def scenario() -> None:
        partials = [submit(batcher, PARTIAL, final=False) for _ in range(6)]
        held = [await engine.next_call(), await engine.next_call()]
        assert [c.lengths for c in held] == [[PARTIAL], [PARTIAL]]
        final = submit(batcher, FINAL, final=True)
        third = await engine.next_call()
        assert third.lengths == [FINAL], "the third worker stayed free for the final"
        assert engine.calls.empty()
        third.release.set()
        assert isinstance(await final, Served)
        engine.auto_release = True
        for call in held:
            call.release.set()
        assert all(isinstance(o, Served) for o in await asyncio.gather(*partials))

    asyncio.run(scenario())
    batcher.stop()


def test_partial_workers_take_partials_only_and_final_workers_finals_only() -> None:
    engine = GatedEngine(auto_release=True)
    batcher = make(engine, workers=2, partial_workers=1, max_batch_size=2, partial_deadline_s=10.0)

    async def scenario() -> None:
        jobs = [submit(batcher, FINAL if i % 3 else PARTIAL, final=bool(i % 3)) for i in range(24)]
        await asyncio.gather(*jobs)

    asyncio.run(scenario())
    batcher.stop()
    for call in engine.history:
        kind = "final" if FINAL in call.lengths else "partial"
        assert call.thread.endswith(f"-{kind}"), (kind, call.thread)


def test_a_crashing_worker_fails_its_batch_and_restarts() -> None:
    engine = GatedEngine(auto_release=True, short_results=True)
    batcher = make(engine, max_batch_size=1)
    crashes = metrics.THREAD_CRASHES.labels("model_worker")
    before = crashes._value.get()

    async def scenario() -> tuple[Outcome, Outcome]:
        first = await batcher.submit(request(FINAL), is_final=True)
        engine.short_results = False
        second = await batcher.submit(request(FINAL), is_final=True)
        return first, second

    first, second = asyncio.run(scenario())
    batcher.stop()
    assert isinstance(first, Failed) and first.code == "internal_error"
    assert "ValueError" not in first.message, "exception text stays in the log"
    assert isinstance(second, Served), "the worker restarted and serves again"
    assert crashes._value.get() == before + 1
    assert batcher.failed is None


def test_results_for_a_closed_loop_are_dropped_quietly() -> None:
    engine = GatedEngine()
    batcher = make(engine, max_batch_size=1)

    async def leave_early() -> None:
        pending = submit(batcher, FINAL, final=True)
        await engine.next_call()
        pending.cancel()

    loop = asyncio.new_event_loop()
    loop.run_until_complete(leave_early())
    loop.close()  # the caller is gone before its result
    engine.history[0].release.set()
    engine.auto_release = True

    async def next_one() -> Outcome:
        return await batcher.submit(request(FINAL), is_final=True)

    assert isinstance(asyncio.run(next_one()), Served), "the worker survived the closed loop"
    batcher.stop()
    assert batcher.failed is None


FILE = 4800  # a file segment's length (the kinds stay apart in the engine's records)


def submit_file(batcher: Batcher, samples: int = FILE) -> asyncio.Task[Outcome]:
    return asyncio.ensure_future(batcher.submit_file_segment(request(samples), request_id="file-1"))


def test_live_finals_and_partials_are_taken_before_waiting_file_segments() -> None:
    engine = GatedEngine()
    batcher = make(engine, max_batch_size=1, partial_deadline_s=10.0)  # one shared worker

    async def scenario() -> None:
        running = submit_file(batcher)
        call = await engine.next_call()
        files = [submit_file(batcher) for _ in range(3)]
        partial = submit(batcher, PARTIAL, final=False)
        final = submit(batcher, FINAL, final=True)  # arrives last, runs first
        await queued()
        order = []
        for _ in range(5):
            call.release.set()
            call = await engine.next_call()
            order.append(call.lengths)
        call.release.set()
        assert order == [[FINAL], [PARTIAL], [FILE], [FILE], [FILE]]
        assert all(isinstance(o, Served) for o in await asyncio.gather(running, *files, partial, final))

    asyncio.run(scenario())
    batcher.stop()


def test_file_segments_run_on_partial_workers_never_on_final_workers() -> None:
    engine = GatedEngine(auto_release=True)
    batcher = make(engine, workers=2, partial_workers=1, max_batch_size=2, partial_deadline_s=10.0)

    async def scenario() -> None:
        jobs = [submit_file(batcher) if i % 2 else submit(batcher, FINAL, final=True) for i in range(24)]
        assert all(isinstance(o, Served) for o in await asyncio.gather(*jobs))

    asyncio.run(scenario())
    batcher.stop()
    for call in engine.history:
        assert len(set(call.lengths)) == 1, "a batch holds one kind"
        expected = "-partial" if call.lengths[0] == FILE else "-final"
        assert call.thread.endswith(expected), (call.lengths, call.thread)


def test_one_of_several_shared_workers_stays_free_of_file_segments() -> None:
    engine = GatedEngine()
    batcher = make(engine, workers=2, max_batch_size=1)

    async def scenario() -> None:
        files = [submit_file(batcher) for _ in range(4)]
        held = await engine.next_call()
        final = submit(batcher, FINAL, final=True)
        second = await engine.next_call()
        assert second.lengths == [FINAL], "the second worker took the final, not a file segment"
        engine.auto_release = True
        second.release.set()
        held.release.set()
        assert all(isinstance(o, Served) for o in await asyncio.gather(final, *files))

    asyncio.run(scenario())
    batcher.stop()


def test_waiting_file_segments_are_never_shed_and_do_not_signal_overload() -> None:
    engine = GatedEngine()
    clock = ManualClock()
    batcher = make(engine, clock, max_batch_size=1, partial_deadline_s=0.2, overload_wait_s=0.3)

    async def scenario() -> None:
        running = submit_file(batcher)
        call = await engine.next_call()
        files = [submit_file(batcher) for _ in range(3)]
        await queued()
        clock.now += 60.0  # far past the partial deadline and the overload wait
        assert not batcher.overloaded(), "files waiting are background work, not live overload"
        assert batcher.admission() is None
        engine.auto_release = True
        call.release.set()
        assert all(isinstance(o, Served) for o in await asyncio.gather(running, *files))

    asyncio.run(scenario())
    batcher.stop()
