"""The link between a front-end process and the model process: the wire format (round trips
are exact) and RemoteBatcher <-> BatcherHost over a real pipe with a real Batcher and the
demo engine (both ends in this process: the pipe, threads and encoding are the same)."""

from __future__ import annotations

import asyncio
import multiprocessing
import time
from collections.abc import Iterator

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from emostt.batching.batcher import Batcher, BatcherConfig, BatcherFullError
from emostt.batching.host import BatcherHost
from emostt.batching.remote import RemoteBatcher
from emostt.batching.slots import FrontendSlots
from emostt.batching.wire import (
    CancelMessage,
    JobMessage,
    OutcomeMessage,
    Refused,
    StatusMessage,
    decode,
    encode_cancel,
    encode_job,
    encode_outcome,
    encode_status,
)
from emostt.inference.engine import (
    Distribution,
    Engine,
    ModelInfo,
    TranscriptionRequest,
    TranscriptionResult,
    Word,
)
from emostt.policy.outcome import Failed, Served
from emostt.policy.retry import ResilientRunner
from tests.integration.faults import FaultyEngine, GatedEngine

finite = st.floats(allow_nan=False, allow_infinity=False, width=32)
labels = st.text(min_size=1, max_size=8)


def distributions() -> st.SearchStrategy[Distribution]:
    return st.dictionaries(labels, st.floats(0, 1), min_size=1, max_size=5).map(
        lambda scores: Distribution(max(scores, key=scores.__getitem__), scores)
    )


results = st.builds(
    TranscriptionResult,
    text=st.text(max_size=40),
    language=distributions(),
    emotion=distributions(),
    event=distributions(),
    confidence=st.floats(0, 1),
    duration_ms=st.integers(0, 30_000),
    raw_text=st.text(max_size=40),
    words=st.none()
    | st.lists(st.builds(Word, st.text(max_size=8), st.integers(0, 9), st.integers(0, 9), st.floats(0, 1))),
)


@given(
    job_id=st.integers(0, 2**53),
    kind=st.sampled_from(["final", "partial", "file"]),
    session=st.text(max_size=20),
    samples=st.lists(finite, max_size=400),
    language=st.sampled_from(["auto", "en", "zh"]),
    flags=st.tuples(st.booleans(), st.booleans(), st.booleans()),
)
def test_a_job_arrives_exactly_as_sent(
    job_id: int, kind: str, session: str, samples: list[float], language: str, flags: tuple[bool, ...]
) -> None:
    audio = np.asarray(samples, dtype=np.float32)
    request = TranscriptionRequest(audio, language, *flags)
    message = decode(encode_job(JobMessage(job_id, kind, session, request)))  # type: ignore[arg-type]
    assert isinstance(message, JobMessage)
    assert (message.job_id, message.kind, message.session_id) == (job_id, kind, session)
    got = message.request
    assert got.audio.dtype == np.float32 and np.array_equal(got.audio, audio)
    assert (got.language, got.use_itn, got.word_timestamps, got.known_emotion_only) == (language, *flags)
    got.audio[:1] = 0.5  # the decoded samples are the request's own, writable


@given(job_id=st.integers(0, 2**53), result=results, degraded=st.booleans())
def test_a_served_result_arrives_exactly_as_sent(
    job_id: int, result: TranscriptionResult, degraded: bool
) -> None:
    message = decode(encode_outcome(OutcomeMessage(job_id, Served(result, degraded))))
    assert message == OutcomeMessage(job_id, Served(result, degraded))


@given(code=st.text(min_size=1), text=st.text(), retryable=st.booleans())
def test_failures_refusals_cancels_and_status_arrive_as_sent(code: str, text: str, retryable: bool) -> None:
    assert decode(encode_outcome(OutcomeMessage(1, Failed(code, text, retryable)))) == OutcomeMessage(
        1, Failed(code, text, retryable)
    )
    assert decode(encode_outcome(OutcomeMessage(2, Refused("overloaded", text)))) == OutcomeMessage(
        2, Refused("overloaded", text)
    )
    assert decode(encode_cancel(7)) == CancelMessage(7)
    status = StatusMessage(True, None, ModelInfo("demo", "r", "cpu", "int8", "onnx"), 3, 4, None, False, 1.5)
    assert decode(encode_status(status)) == status


def test_an_unknown_message_kind_is_an_error() -> None:
    with pytest.raises(ValueError, match="unknown message kind"):
        decode(b"X{}")


def test_a_front_ends_heartbeat_is_none_until_it_beats_and_again_after_a_reset() -> None:
    slots = FrontendSlots(multiprocessing.get_context("spawn"), 2)
    assert slots.last_beat(0) is None, "zero means the front end never served"
    before = time.monotonic()
    slots.beat(0)
    beat = slots.last_beat(0)
    assert beat is not None and before <= beat <= time.monotonic()
    assert slots.last_beat(1) is None, "each front end beats in its own slot"
    slots.reset(0)  # a restarted front end must serve again before it counts as started
    assert slots.last_beat(0) is None


class Link:
    """A model-process host and one front end's RemoteBatcher over a real pipe."""

    def __init__(self, engine: Engine, config: BatcherConfig | None = None) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.slots = FrontendSlots(ctx, 2)
        self.batcher = Batcher(ResilientRunner(engine), config or BatcherConfig(max_wait_s=0.0))
        self.batcher.start()
        self.host = BatcherHost(self.slots, status_interval_s=0.01)
        self.host.serve(self.batcher)
        self.host.start()
        ours, theirs = ctx.Pipe(duplex=True)
        self.lost = asyncio.Event()
        self.remote = RemoteBatcher(theirs, 1, self.slots, on_lost=self._lost)
        self.loop: asyncio.AbstractEventLoop | None = None
        self.host.attach(1, ours)
        self.remote.start()

    def _lost(self) -> None:
        assert self.loop is not None
        self.loop.call_soon_threadsafe(self.lost.set)

    def close(self) -> None:
        self.remote.stop()
        self.host.stop()
        self.batcher.stop()


@pytest.fixture
def link(demo_engine: Engine) -> Iterator[Link]:
    link = Link(demo_engine)
    yield link
    link.close()


async def until(condition: object, timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():  # type: ignore[operator]
            await asyncio.sleep(0.005)


def test_an_utterance_sent_through_the_link_is_served_by_the_host_batcher(
    link: Link, demo_engine: Engine, speech_16k: np.ndarray
) -> None:
    async def run() -> None:
        link.loop = asyncio.get_running_loop()
        await until(lambda: link.remote.ready)  # the host's status says so before any job
        request = TranscriptionRequest(speech_16k)
        outcome = await link.remote.submit(request, is_final=True, session_id="s1")
        assert isinstance(outcome, Served)
        assert outcome.result == demo_engine.transcribe([request])[0], "the same result as in-process"
        assert link.remote.model == demo_engine.info

    asyncio.run(run())


def test_sessions_and_speech_are_counted_for_the_whole_server(link: Link) -> None:
    async def run() -> None:
        link.loop = asyncio.get_running_loop()
        link.slots.set_sessions(0, 3)  # another front end's sessions
        link.remote.set_sessions(2)
        assert link.remote.open_sessions() == 5, "admission sees every front end's sessions at once"
        await until(lambda: link.batcher.open_sessions() == 5)
        demand_before = link.batcher.capacity.demand
        link.remote.record_speech(120.0)
        await until(lambda: link.batcher.capacity.demand > demand_before)

    asyncio.run(run())


def test_a_full_host_queue_is_a_refusal_and_a_cancelled_job_costs_no_compute(demo_engine: Engine) -> None:
    gated = GatedEngine(demo_engine)
    counted = FaultyEngine(gated)  # records the batch sizes the model ran
    link = Link(counted, BatcherConfig(max_waiting=1, max_wait_s=0.0))
    audio = np.zeros(16_000, dtype=np.float32)

    async def run() -> None:
        link.loop = asyncio.get_running_loop()
        await until(lambda: link.remote.ready)
        first = asyncio.ensure_future(link.remote.submit(TranscriptionRequest(audio), is_final=True))
        await asyncio.to_thread(gated.entered.wait, 10)  # the first batch holds the model
        second = asyncio.ensure_future(link.remote.submit(TranscriptionRequest(audio), is_final=True))
        await until(lambda: link.batcher.depth == 1)
        with pytest.raises(BatcherFullError):
            await link.remote.submit(TranscriptionRequest(audio), is_final=True)
        second.cancel()
        await until(lambda: link.host.jobs(1) == (2, 1))  # in flight, of which cancelled
        gated.release.set()
        assert isinstance(await first, Served)
        await until(lambda: link.batcher.depth == 0 and link.host.jobs(1) == (0, 0))
        assert counted.calls == [1], "the cancelled utterance never reached the model"

    try:
        asyncio.run(run())
    finally:
        gated.release.set()
        link.close()


def test_when_the_model_process_goes_away_work_in_flight_fails_and_the_front_end_is_told(
    demo_engine: Engine,
) -> None:
    gated = GatedEngine(demo_engine)
    link = Link(gated)
    audio = np.zeros(16_000, dtype=np.float32)

    async def run() -> None:
        link.loop = asyncio.get_running_loop()
        await until(lambda: link.remote.ready)
        waiting = asyncio.ensure_future(link.remote.submit(TranscriptionRequest(audio), is_final=True))
        await asyncio.to_thread(gated.entered.wait, 10)
        link.host.stop()  # the model process's ends of the pipes close, as when it exits
        outcome = await asyncio.wait_for(waiting, 10)
        assert outcome == Failed("internal_error", "the server lost its model process; reconnect", True)
        await asyncio.wait_for(link.lost.wait(), 10)
        assert link.remote.failure() == "the model process exited"
        assert not link.remote.ready

    try:
        asyncio.run(run())
    finally:
        gated.release.set()
        link.close()
