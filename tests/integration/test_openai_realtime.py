"""OpenAI Realtime transcription (``/v1/realtime?intent=transcription``) against a real server with
the bundled demo model: a raw client using OpenAI's event names (GA and beta shapes, server VAD
and manual commits, clear, errors, keys) and the official ``openai`` SDK's Realtime clients."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
import soxr
from openai import AsyncOpenAI
from prometheus_client import REGISTRY
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from emostt.audio import read_audio_file
from emostt.inference.sensevoice import SenseVoiceEngine
from tests.conftest import espeak
from tests.integration.redis_server import RedisServer
from tests.integration.server import Server, pcm16, running_server, service_settings

SAMPLE = Path(__file__).resolve().parents[2] / "docs" / "samples" / "turn_left.wav"
KEY, DEVICE_KEY = "test-key", "robot-key"
WAIT_S = 60.0  # bound on waiting for an event: a hang fails the test instead of blocking it
CHUNK_MS = 50  # LiveKit appends 50 ms at a time
# LiveKit's session.update (livekit-plugins-openai 1.8.9, defaults), as it sends it.
LIVEKIT_UPDATE = {
    "type": "session.update",
    "session": {
        "type": "transcription",
        "audio": {
            "input": {
                "format": {"rate": 24000, "type": "audio/pcm"},
                "transcription": {"model": "gpt-4o-mini-transcribe", "language": "en"},
                "turn_detection": {
                    "type": "server_vad",
                    "threshold": 0.5,
                    "prefix_padding_ms": 600,
                    "silence_duration_ms": 350,
                },
            }
        },
    },
}
# Pipecat's (pipecat-ai 1.14 OpenAIRealtimeSTTService defaults): local VAD, the client commits.
PIPECAT_UPDATE = {
    "type": "session.update",
    "session": {
        "type": "transcription",
        "audio": {
            "input": {
                "format": {"type": "audio/pcm", "rate": 24000},
                "transcription": {"model": "gpt-realtime-whisper", "language": "en"},
                "turn_detection": None,
            }
        },
    },
}


@pytest.fixture(scope="module")
def engine(demo_engine: SenseVoiceEngine) -> SenseVoiceEngine:
    return demo_engine


def settings(**overrides: Any) -> Any:
    return service_settings(
        session_defaults={"partial_interval_ms": 200},
        auth_tokens={KEY: "*", DEVICE_KEY: "robot-1"},
        **overrides,
    )


@pytest.fixture(scope="module")
def server(engine: SenseVoiceEngine) -> Iterator[Server]:
    with running_server(settings(), engine) as srv:
        yield srv


def room_noise(seconds: float, seed: int = 0) -> np.ndarray:
    """A microphone's noise floor (-65 dBFS), as in the demo model's training data."""
    rng = np.random.default_rng(seed)
    return (rng.standard_normal(int(seconds * 16_000)) * 10 ** (-65 / 20)).astype(np.float32)


def utterance(speech: np.ndarray, rate: int = 24_000) -> bytes:
    """Speech between room noise (enough after it to end the turn), as PCM16 at ``rate``."""
    audio = np.concatenate([room_noise(0.5), speech, room_noise(1.0, seed=1)])
    return pcm16(soxr.resample(audio, 16_000, rate).astype(np.float32))


@pytest.fixture(scope="module")
def turn_left() -> bytes:
    return utterance(read_audio_file(SAMPLE))


def appends(pcm: bytes, rate: int = 24_000) -> list[dict[str, Any]]:
    size = rate * 2 * CHUNK_MS // 1000
    return [
        {"type": "input_audio_buffer.append", "audio": base64.b64encode(pcm[i : i + size]).decode()}
        for i in range(0, len(pcm), size)
    ]


def url(server: Server, query: str = "") -> str:
    return f"ws://{server.base}/v1/realtime?intent=transcription" + (f"&{query}" if query else "")


class Client:
    """A raw websockets client: OpenAI event names, JSON text frames."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.events: list[dict[str, Any]] = []

    async def send(self, *events: dict[str, Any] | str, pace_s: float = 0.0) -> None:
        for event in events:
            await self.ws.send(event if isinstance(event, str) else orjson.dumps(event).decode())
            if pace_s:
                await asyncio.sleep(pace_s)  # a live microphone: audio arrives in real time

    async def until(self, done: Callable[[dict[str, Any]], bool]) -> list[dict[str, Any]]:
        """Events up to and including the first for which ``done`` is true."""
        start = len(self.events)

        async def read() -> None:
            while True:
                event = orjson.loads(await self.ws.recv())
                self.events.append(event)
                if done(event):
                    return

        await asyncio.wait_for(read(), WAIT_S)
        return self.events[start:]

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e["type"] == kind]


def is_type(kind: str) -> Callable[[dict[str, Any]], bool]:
    return lambda event: event["type"] == kind


def realtime(
    server: Server,
    *,
    key: str | None = KEY,
    query: str = "",
    subprotocols: list[str] | None = None,
    beta: bool = False,
) -> Any:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    if beta:
        headers["OpenAI-Beta"] = "realtime=v1"
    return connect(url(server, query), additional_headers=headers, subprotocols=subprotocols)  # type: ignore[arg-type]


COMPLETED = "conversation.item.input_audio_transcription.completed"
DELTA = "conversation.item.input_audio_transcription.delta"


def check_transcripts(events: list[dict[str, Any]], expected: list[str]) -> list[dict[str, Any]]:
    """Every event has a unique event_id; each item's deltas add up to a prefix of its transcript
    (here: all of it); the transcripts are ``expected``, with emotion scores summing to 1."""
    assert all(e.get("event_id") for e in events)
    assert len({e["event_id"] for e in events}) == len(events)
    completed = [e for e in events if e["type"] == COMPLETED]
    assert [c["transcript"] for c in completed] == expected
    for c in completed:
        joined = "".join(e["delta"] for e in events if e["type"] == DELTA and e["item_id"] == c["item_id"])
        assert c["transcript"].startswith(joined) and joined, (joined, c["transcript"])
        assert c["content_index"] == 0
        assert abs(sum(c["emotion"]["scores"].values()) - 1) < 1e-3
        assert c["emotion"]["label"] in c["emotion"]["scores"]
        assert c["language"]["label"] == "en" and c["languages"] == [{"code": "en"}]
        assert set(c["event"]) == {"label", "scores"} and 0 < c["confidence"] <= 1
        assert c["usage"]["type"] == "duration" and c["usage"]["seconds"] > 0
    return completed


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def test_ga_session_with_server_vad(server: Server, turn_left: bytes) -> None:
    async with realtime(server) as ws:
        client = Client(ws)
        created = (await client.until(is_type("session.created")))[0]
        assert created["session"]["type"] == "transcription"
        assert created["session"]["emostt"]["device_id"].startswith("realtime-")  # a key for any device
        await client.send(LIVEKIT_UPDATE, *appends(turn_left))
        events = [created, *await client.until(is_type(COMPLETED))]
    kinds = [e["type"] for e in events]
    assert kinds[:2] == ["session.created", "session.updated"]
    updated = events[1]["session"]["audio"]["input"]
    assert updated["turn_detection"] == LIVEKIT_UPDATE["session"]["audio"]["input"]["turn_detection"]  # type: ignore[index]
    assert updated["transcription"]["model"] == "gpt-4o-mini-transcribe"
    started, stopped, committed = (
        next(e for e in events if e["type"] == f"input_audio_buffer.{k}")
        for k in ("speech_started", "speech_stopped", "committed")
    )
    assert kinds.index(started["type"]) < kinds.index(stopped["type"]) < kinds.index(committed["type"])
    assert started["item_id"] == stopped["item_id"] == committed["item_id"]
    assert committed["previous_item_id"] is None
    assert 0 <= started["audio_start_ms"] < stopped["audio_end_ms"]
    [completed] = check_transcripts(events, ["turn left"])
    assert completed["item_id"] == committed["item_id"]
    assert kinds.index(COMPLETED) > kinds.index(committed["type"]) and DELTA in kinds
    assert completed["end_reason"] == "silence" and not completed["gated"]


async def test_deltas_arrive_while_the_user_speaks(server: Server, tmp_path: Path) -> None:
    speech = read_audio_file(espeak("turn off the lights", tmp_path / "s.wav", voice="en-us+m2", speed=168))
    async with realtime(server) as ws:
        client = Client(ws)
        await client.send(LIVEKIT_UPDATE)
        await client.send(*appends(utterance(speech * 0.5)), pace_s=CHUNK_MS / 1000)
        events = await client.until(is_type(COMPLETED))
    kinds = [e["type"] for e in events]
    # Interim text before the endpoint: stable words only, each delta appended to the last.
    assert DELTA in kinds[: kinds.index("input_audio_buffer.speech_stopped")]
    check_transcripts(events, ["turn off the lights"])


async def test_beta_transcription_session_shape(server: Server, turn_left: bytes) -> None:
    update = {
        "type": "transcription_session.update",
        "event_id": "evt_1",
        "session": {
            "input_audio_format": "pcm16",
            "input_audio_transcription": {"model": "gpt-4o-transcribe", "language": "en", "prompt": ""},
            "turn_detection": {"type": "server_vad", "threshold": 0.5, "silence_duration_ms": 500},
            "input_audio_noise_reduction": {"type": "near_field"},
        },
    }
    async with realtime(server, beta=True) as ws:
        client = Client(ws)
        await client.send(update, *appends(turn_left))
        events = await client.until(is_type(COMPLETED))
    assert [e["type"] for e in events[:2]] == [
        "transcription_session.created",
        "transcription_session.updated",
    ]
    session = events[1]["session"]
    assert (
        session["input_audio_format"] == "pcm16" and session["turn_detection"]["silence_duration_ms"] == 500
    )
    assert session["input_audio_noise_reduction"] == {"type": "near_field"}
    assert "input_audio_buffer.speech_started" in [e["type"] for e in events]
    check_transcripts(events, ["turn left"])


async def test_manual_turns_commit_and_clear(server: Server, turn_left: bytes) -> None:
    discarded = metric("emostt_utterances_total", outcome="discarded")
    async with realtime(server) as ws:
        client = Client(ws)
        await client.send(PIPECAT_UPDATE)
        await client.until(is_type("session.updated"))
        # Audio, then clear: nothing of it is transcribed.
        await client.send(*appends(turn_left)[:20], {"type": "input_audio_buffer.clear"})
        await client.until(is_type("input_audio_buffer.cleared"))
        await client.send({"type": "input_audio_buffer.commit", "event_id": "evt_empty"})
        [error] = [e for e in await client.until(is_type("error")) if e["type"] == "error"]
        assert error["error"]["code"] == "input_audio_buffer_commit_empty"
        assert error["error"]["event_id"] == "evt_empty" and error["error"]["type"] == "invalid_request_error"
        # The whole buffer is one turn, ended by the commit alone (the audio holds 1 s of silence).
        for _ in range(2):
            await client.send(*appends(turn_left), {"type": "input_audio_buffer.commit"})
            await client.until(is_type(COMPLETED))
    assert metric("emostt_utterances_total", outcome="discarded") == discarded + 1
    events = client.events
    kinds = [e["type"] for e in events]
    assert (
        "input_audio_buffer.speech_started" not in kinds and "input_audio_buffer.speech_stopped" not in kinds
    )
    completed = check_transcripts(events, ["turn left", "turn left"])
    committed = client.of("input_audio_buffer.committed")
    assert [c["item_id"] for c in committed] == [c["item_id"] for c in completed]
    assert committed[1]["previous_item_id"] == committed[0]["item_id"]
    assert all(c["end_reason"] == "finalize" for c in completed)


async def test_clear_during_speech_drops_the_turn(server: Server, turn_left: bytes) -> None:
    async with realtime(server) as ws:
        client = Client(ws)
        await client.send(LIVEKIT_UPDATE, *appends(turn_left)[:20])  # 0.5 s of noise, then speech
        started = (await client.until(is_type("input_audio_buffer.speech_started")))[-1]
        await client.send({"type": "input_audio_buffer.clear"})
        events = await client.until(is_type("input_audio_buffer.cleared"))
        assert [e["type"] for e in events[-2:]] == [
            "input_audio_buffer.speech_stopped",
            "input_audio_buffer.cleared",
        ]
        assert events[-2]["item_id"] == started["item_id"]
        await client.send(*appends(turn_left))
        await client.until(is_type(COMPLETED))
    [completed] = check_transcripts(client.events, ["turn left"])
    assert completed["item_id"] != started["item_id"]


async def test_other_sample_rates_are_resampled(server: Server) -> None:
    update = {
        "type": "session.update",
        "session": {
            "type": "transcription",
            "audio": {"input": {"format": {"type": "audio/pcm", "rate": 48000}}},
        },
    }
    async with realtime(server) as ws:
        client = Client(ws)
        await client.send(update, *appends(utterance(read_audio_file(SAMPLE), 48_000), 48_000))
        events = await client.until(is_type(COMPLETED))
    assert events[1]["session"]["audio"]["input"]["format"] == {"type": "audio/pcm", "rate": 48000}
    check_transcripts(events, ["turn left"])


async def test_invalid_events_get_errors_and_the_session_goes_on(server: Server, turn_left: bytes) -> None:
    bad_vad = {
        "type": "session.update",
        "event_id": "evt_vad",
        "session": {"type": "transcription", "audio": {"input": {"turn_detection": {"threshold": 2}}}},
    }
    async with realtime(server) as ws:
        client = Client(ws)
        await client.send(
            "not json",
            {"type": "response.create", "event_id": "evt_response"},
            {"type": "input_audio_buffer.append", "audio": "%%%", "event_id": "evt_audio"},
            bad_vad,
            LIVEKIT_UPDATE,
            *appends(turn_left),
        )
        events = await client.until(is_type(COMPLETED))
    errors = [e["error"] for e in events if e["type"] == "error"]
    assert [(e["code"], e["param"], e["event_id"]) for e in errors] == [
        ("invalid_json", None, None),
        ("invalid_value", "type", "evt_response"),
        ("invalid_value", "audio", "evt_audio"),
        ("invalid_value", "session.audio.input.turn_detection.threshold", "evt_vad"),
    ]
    assert all(e["type"] == "invalid_request_error" and e["message"] for e in errors)
    assert len(client.of("session.updated")) == 1  # the bad update changed nothing
    check_transcripts(events, ["turn left"])


async def test_oversized_strings_are_refused_naming_their_field_and_never_echoed(
    server: Server, turn_left: bytes
) -> None:
    long = "x" * 200_000
    async with realtime(server) as ws:
        client = Client(ws)
        update = {"type": "session.update", "session": {"type": "transcription"}}
        update["session"]["audio"] = {"input": {"transcription": {"model": long}}}
        await client.send({"type": "input_audio_buffer.clear", "event_id": long}, update, *appends(turn_left))
        events = await client.until(is_type(COMPLETED))
    errors = [e["error"] for e in events if e["type"] == "error"]
    assert [(e["param"], e["event_id"]) for e in errors] == [
        ("event_id", None),
        ("session.audio.input.transcription.model", None),
    ]
    assert all(long not in orjson.dumps(e).decode() for e in events)
    check_transcripts(events, ["turn left"])  # the session went on
    async with realtime(server, query="model=" + "m" * 257) as ws:
        [error] = await Client(ws).until(is_type("error"))
        with pytest.raises(ConnectionClosed):
            await ws.recv()
    assert ws.close_code == 1008 and "model is longer than 256" in error["error"]["message"]


async def test_bad_keys_are_refused(server: Server) -> None:
    for key, query in ((None, ""), ("wrong", ""), (DEVICE_KEY, "device_id=robot-2")):
        async with realtime(server, key=key, query=query) as ws:
            client = Client(ws)
            [error] = await client.until(is_type("error"))
            with pytest.raises(ConnectionClosed):
                await ws.recv()
        assert ws.close_code == 1008
        assert error["error"]["type"] == "invalid_request_error"
        assert error["error"]["code"] == "invalid_api_key"


async def test_key_forms_and_device_ids(server: Server) -> None:
    # A browser: the key and the beta flag as subprotocols, beside "realtime".
    protocols = ["realtime", f"openai-insecure-api-key.{KEY}", "openai-beta.realtime-v1"]
    async with realtime(server, key=None, subprotocols=protocols) as ws:
        assert ws.subprotocol == "realtime"
        created = (await Client(ws).until(is_type("transcription_session.created")))[0]
        assert created["session"]["object"] == "realtime.transcription_session"
    async with realtime(server, key=DEVICE_KEY) as ws:  # a key bound to one device names it
        created = (await Client(ws).until(is_type("session.created")))[0]
        assert created["session"]["emostt"]["device_id"] == "robot-1"
    async with realtime(server, query="device_id=kiosk-7") as ws:
        created = (await Client(ws).until(is_type("session.created")))[0]
        assert created["session"]["emostt"]["device_id"] == "kiosk-7"


async def test_official_sdk_realtime_client(server: Server, turn_left: bytes) -> None:
    client = AsyncOpenAI(base_url=f"http://{server.base}/v1", api_key=KEY, max_retries=0)
    events: list[Any] = []
    async with client.realtime.connect(extra_query={"intent": "transcription"}) as connection:
        await connection.session.update(session=LIVEKIT_UPDATE["session"])  # type: ignore[arg-type]
        for append in appends(turn_left):
            await connection.input_audio_buffer.append(audio=append["audio"])
        async for event in connection:
            events.append(event)
            if event.type == COMPLETED:
                break
    kinds = [e.type for e in events]
    assert kinds[:2] == ["session.created", "session.updated"]
    assert "input_audio_buffer.speech_started" in kinds and DELTA in kinds
    completed = events[-1]
    assert completed.transcript == "turn left" and completed.usage.type == "duration"
    assert completed.transcript.startswith("".join(e.delta for e in events if e.type == DELTA))
    assert completed.model_extra["emotion"]["label"] in completed.model_extra["emotion"]["scores"]


async def test_official_sdk_beta_client(server: Server, turn_left: bytes) -> None:
    client = AsyncOpenAI(
        base_url=f"http://{server.base}/v1", websocket_base_url=f"ws://{server.base}/v1", api_key=KEY
    )
    async with client.beta.realtime.connect(
        model="gpt-4o-transcribe", extra_query={"intent": "transcription"}
    ) as connection:
        await connection.transcription_session.update(
            session={"input_audio_format": "pcm16", "turn_detection": None}
        )
        for append in appends(turn_left):
            await connection.input_audio_buffer.append(audio=append["audio"])
        await connection.input_audio_buffer.commit()
        events = []
        async for event in connection:
            events.append(event)
            if event.type == COMPLETED:
                break
    assert [e.type for e in events][:2] == ["transcription_session.created", "transcription_session.updated"]
    assert events[-1].transcript == "turn left"


async def test_limits_drain_and_results_like_ws_stt(
    engine: SenseVoiceEngine, turn_left: bytes, tmp_path: Path
) -> None:
    redis_server = RedisServer(tmp_path)
    redis_server.start()
    try:
        with running_server(settings(max_connections=1, results_redis_url=redis_server.url), engine) as srv:
            async with realtime(srv, key=DEVICE_KEY) as ws:
                client = Client(ws)
                await client.send(PIPECAT_UPDATE, *appends(turn_left))
                # A second session.update answers once the audio before it has been handled.
                await client.send(PIPECAT_UPDATE)
                await client.until(lambda e: len(client.of("session.updated")) == 2)
                async with realtime(srv) as second:  # the connection limit: 1013, like /ws/stt
                    [refused] = await Client(second).until(is_type("error"))
                    with pytest.raises(ConnectionClosed):
                        await second.recv()
                assert second.close_code == 1013
                assert refused["error"] | {"message": ""} == {
                    "type": "server_error",
                    "code": "too_many_connections",
                    "message": "",
                    "param": None,
                    "event_id": None,
                    "retryable": True,
                }
                # Drain: the uncommitted turn is committed and transcribed, then 1012.
                srv.begin_shutdown()
                await client.until(is_type(COMPLETED))
                with pytest.raises(ConnectionClosed):
                    await client.until(lambda e: False)
            assert ws.close_code == 1012
            check_transcripts(client.events, ["turn left"])
        # Published under the key's device, as /ws/stt publishes (the server flushed at exit).
        entries = redis_server.client().xrange("emostt:results:robot-1")
        finals = [orjson.loads(fields[b"event"]) for _, fields in entries]
        assert [(f["type"], f["text"]) for f in finals] == [("final", "turn left")]
    finally:
        redis_server.stop()
