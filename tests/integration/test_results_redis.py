"""Results on Redis Streams (EMOSTT_RESULTS_REDIS_URL) against a real redis-server: the stream holds
exactly the session's finals in order, and Redis going away never costs the device a result."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
from prometheus_client import REGISTRY
from pydantic import ValidationError
from websockets.asyncio.client import ClientConnection, connect

from emostt.config import Settings
from emostt.inference.engine import Engine
from emostt.inference.sensevoice import EngineOptions, SenseVoiceEngine
from emostt.results.redis_streams import PublisherConfig, ResultsPublisher
from tests.integration.redis_server import RedisServer
from tests.integration.server import pcm16, running_server, service_settings, stream

PUBLISHED = ("final", "emotion_changed")


@pytest.fixture(scope="module")
def engine(tiny_model_dir: Path) -> Engine:
    return SenseVoiceEngine.load(str(tiny_model_dir), EngineOptions(device="cpu", precision="fp32"))


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def published(kind: str) -> float:
    return REGISTRY.get_sample_value("emostt_results_published_total", {"outcome": kind}) or 0.0


def stream_events(redis: RedisServer, device_id: str) -> list[dict[str, Any]]:
    entries = redis.client().xrange(f"emostt:results:{device_id}")
    return [orjson.loads(fields[b"event"]) for _, fields in entries]


def wait_until(condition: Callable[[], bool], timeout_s: float = 20.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_the_stream_holds_exactly_the_sessions_finals_in_order(
    engine: Engine, redis_server: RedisServer, speech_with_pauses: np.ndarray
) -> None:
    settings = service_settings(results_redis_url=redis_server.url)
    with running_server(settings, engine) as server:
        transcript = asyncio.run(stream(server.ws_url("robot-7"), pcm16(speech_with_pauses), pace_s=0.01))
    sent = [e for e in transcript.events if e["type"] in PUBLISHED]
    assert len(transcript.of("final")) == 3
    # The server's shutdown writes out the buffer, so the stream is complete once it has stopped.
    got = stream_events(redis_server, "robot-7")
    assert [{k: v for k, v in e.items() if k != "device_id"} for e in got] == sent
    assert {e["device_id"] for e in got} == {"robot-7"}
    assert not redis_server.client().exists("emostt:results:robot-8")


async def _speak_phrase_by_phrase(
    url: str, phrases: list[bytes], between: Callable[[int], None]
) -> list[dict[str, Any]]:
    """One session: each phrase, then wait for its final, then ``between(n)``; then close."""
    events: list[dict[str, Any]] = []

    async def next_final(ws: ClientConnection) -> None:
        while True:
            event = orjson.loads(await asyncio.wait_for(ws.recv(), 60))
            events.append(event)
            if event["type"] == "final":
                return

    async with connect(url) as ws:
        events.append(orjson.loads(await ws.recv()))
        for n, phrase in enumerate(phrases, start=1):
            for i in range(0, len(phrase), 3200):
                await ws.send(phrase[i : i + 3200])
            await next_final(ws)
            await asyncio.to_thread(between, n)
        await ws.send('{"type": "close"}')
        async for raw in ws:
            events.append(orjson.loads(raw))
    return events


def test_redis_down_mid_session_costs_the_device_nothing_and_is_counted(
    engine: Engine, redis_server: RedisServer, speech_with_pauses: np.ndarray
) -> None:
    # The fixture's phrases: 0.5 s lead-in, then each phrase followed by 1 s of silence.
    pcm = pcm16(speech_with_pauses)
    bounds = _phrase_bounds(speech_with_pauses)
    phrases = [pcm[2 * start : 2 * end] for start, end in bounds]
    retried_before = published("retried")

    def between(n: int) -> None:
        if n == 1:  # the first final reached the stream; then Redis goes away
            wait_until(lambda: len(stream_events(redis_server, "robot-9")) == 1, what="first final")
            redis_server.stop()

    settings = service_settings(results_redis_url=redis_server.url)
    with running_server(settings, engine) as server:
        events = asyncio.run(_speak_phrase_by_phrase(server.ws_url("robot-9"), phrases, between))
        finals = [e for e in events if e["type"] == "final"]
        assert [f["utterance_id"] for f in finals] == ["u1", "u2", "u3"], "the device got every final"
        wait_until(lambda: published("retried") > retried_before, what="a failed write to be counted")
        state = server.uvicorn_server.config.app.state.emostt  # type: ignore[attr-defined]
        assert state.results.buffered >= 2, "finals wait in the buffer while Redis is down"
        # Redis comes back on the same address: the buffered finals follow, in order.
        redis_server.start()
        wait_until(lambda: len(stream_events(redis_server, "robot-9")) == 2, timeout_s=30, what="catch-up")
    got = stream_events(redis_server, "robot-9")
    assert [e["utterance_id"] for e in got] == ["u2", "u3"]  # u1 was lost with the stopped server's memory
    assert [e["text"] for e in got] == [f["text"] for f in finals[1:]]


def _phrase_bounds(audio: np.ndarray) -> list[tuple[int, int]]:
    """Sample ranges [start, end) each holding one phrase and the silence after it."""
    voiced = np.flatnonzero(np.abs(audio) > 1e-4)
    gaps = np.flatnonzero(np.diff(voiced) > 8000)  # a second of silence separates phrases
    starts = [0, *(int(voiced[g + 1]) for g in gaps)]
    ends = [*(int(voiced[g + 1]) for g in gaps), len(audio)]
    return list(zip(starts, ends, strict=True))


def test_a_full_buffer_drops_the_oldest_and_counts_them(tmp_path: Path) -> None:
    redis_server = RedisServer(tmp_path)  # not started yet: Redis is down
    dropped_before = published("dropped")

    async def run() -> None:
        publisher = ResultsPublisher(
            PublisherConfig(url=redis_server.url, buffer_size=2, backoff_initial_s=0.05, backoff_max_s=0.2)
        )
        publisher.start()
        for n in range(1, 6):
            publisher.offer("robot-3", {"type": "final", "utterance_id": f"u{n}", "seq": n})
        publisher.offer("robot-3", {"type": "partial", "utterance_id": "u6"})  # never published
        assert publisher.buffered == 2
        assert published("dropped") == dropped_before + 3
        await asyncio.to_thread(redis_server.start)
        deadline = time.monotonic() + 20
        while publisher.buffered:
            assert time.monotonic() < deadline, "buffer never written out"
            await asyncio.sleep(0.05)
        await publisher.close()

    try:
        asyncio.run(run())
        assert [e["utterance_id"] for e in stream_events(redis_server, "robot-3")] == ["u4", "u5"]
    finally:
        redis_server.stop()


def test_the_redis_url_is_checked_and_never_shown() -> None:
    with pytest.raises(ValidationError, match="results_redis_url"):
        Settings(results_redis_url="http://cache:6379")
    settings = Settings(results_redis_url="redis://:s3cret@cache:6379/0")
    assert "s3cret" not in repr(settings) and "s3cret" not in settings.model_dump_json()
