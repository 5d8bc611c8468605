"""livekit-plugins-emostt with the real livekit-agents framework against a real emostt server on the
bundled demo model: streaming events and metadata, flush, recognize() over REST, a server restart
survived by the framework's own retry loop, a bad token failing once, and livekit-plugins-openai's
Realtime STT against /v1/realtime."""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import logging
import re
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pytest
import soxr
from emostt_client.protocol import Error, parse_event
from livekit.agents import (
    APIConnectionError,
    APIConnectOptions,
    APIError,
    APIStatusError,
    ChatContext,
    stt,
    utils,
)
from livekit.plugins import emostt
from livekit.plugins import openai as lk_openai
from livekit.plugins.emostt.errors import close_error
from livekit.rtc import AudioFrame

from emostt.audio import read_audio_file
from emostt.inference.sensevoice import SenseVoiceEngine
from tests.conftest import espeak
from tests.integration import server as server_module
from tests.integration.server import Server, free_port, running_server, service_settings

TOKEN = "livekit-test-token"
ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "docs" / "samples" / "turn_left.wav"
EXAMPLE = ROOT / "clients" / "livekit" / "examples" / "emotion_agent.py"
DEADLINE_S = 60.0  # any single wait; a pass takes well under a second per utterance
EV = stt.SpeechEventType


@pytest.fixture(scope="module")
def engine(demo_engine: SenseVoiceEngine) -> SenseVoiceEngine:
    return demo_engine


def settings(**overrides: Any) -> Any:
    return service_settings(auth_tokens={TOKEN: "*"}, **overrides)


@pytest.fixture(scope="module")
def server(engine: SenseVoiceEngine) -> Iterator[Server]:
    with running_server(settings(), engine) as srv:
        yield srv


@pytest.fixture(scope="module")
def turn_left() -> np.ndarray:
    return read_audio_file(SAMPLE)  # 16 kHz float32; the demo model hears "turn left"


def noise(seconds: float, seed: int = 0) -> np.ndarray:
    """A microphone's noise floor (-65 dBFS) rather than digital silence, as the demo model was trained."""
    samples = int(seconds * 16000)
    return (np.random.default_rng(seed).standard_normal(samples) * 10 ** (-65 / 20)).astype(np.float32)


def frames(audio_16k: np.ndarray, rate: int = 48000, frame_ms: int = 10) -> list[AudioFrame]:
    """LiveKit's own audio type, as a room track delivers it (10 ms frames, 48 kHz by default)."""
    audio = audio_16k if rate == 16000 else soxr.resample(audio_16k, 16000, rate)
    pcm = (np.clip(audio, -1, 32767 / 32768) * 32768).astype(np.int16)
    step = rate * frame_ms // 1000
    return [
        AudioFrame(pcm[i : i + step].tobytes(), rate, 1, len(pcm[i : i + step]))
        for i in range(0, len(pcm), step)
    ]


def utterance(turn_left: np.ndarray, seed: int = 0, lead: float = 0.5, tail: float = 1.5) -> np.ndarray:
    return np.concatenate([noise(lead, seed), turn_left, noise(tail, seed + 1)])


@contextlib.asynccontextmanager
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with utils.http_context.open() as session:
        yield session


class Events:
    """A stream's events as they come (``queue``, None at its end) and all of them (``log``)."""

    def __init__(self, stream: stt.RecognizeStream) -> None:
        self.queue: asyncio.Queue[stt.SpeechEvent | None] = asyncio.Queue()
        self.log: list[stt.SpeechEvent] = []
        self.error: BaseException | None = None
        self.reader = asyncio.create_task(self._read(stream))

    async def _read(self, stream: stt.RecognizeStream) -> None:
        try:
            async for event in stream:
                self.log.append(event)
                self.queue.put_nowait(event)
        except BaseException as e:
            self.error = e
            raise
        finally:
            self.queue.put_nowait(None)

    async def next(self, kind: stt.SpeechEventType) -> stt.SpeechEvent:
        """The next event of ``kind`` (skipping others), within the deadline."""
        deadline = time.monotonic() + DEADLINE_S
        while True:
            event = await asyncio.wait_for(self.queue.get(), max(0.0, deadline - time.monotonic()))
            assert event is not None, f"the stream ended before a {kind.value}: {self.error!r}"
            if event.type == kind:
                return event


def load_example() -> Any:
    spec = importlib.util.spec_from_file_location("emotion_agent", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def speech_events(events: list[stt.SpeechEvent]) -> list[stt.SpeechEvent]:
    return [e for e in events if e.type != EV.RECOGNITION_USAGE]


def assert_distribution(field: Any) -> None:
    assert isinstance(field, dict) and isinstance(field["label"], str), field
    scores = field["scores"]
    assert field["label"] in scores and abs(sum(scores.values()) - 1.0) < 1e-3, field


def test_stream_turn_left_with_emotion_metadata(server: Server, turn_left: np.ndarray) -> None:
    async def scenario() -> list[stt.SpeechEvent]:
        async with http():
            plugin = emostt.STT(
                url=f"ws://{server.base}", token=TOKEN, device_id="lk-1", word_timestamps=True
            )
            assert plugin.capabilities.streaming and plugin.capabilities.interim_results
            assert plugin.capabilities.aligned_transcript == "word"
            stream = plugin.stream()
            for frame in frames(utterance(turn_left)):  # 48 kHz: the framework resamples to 16 kHz
                stream.push_frame(frame)
            stream.end_input()  # finalize, close, and the remaining finals
            events = [e async for e in stream]
            await stream.aclose()
            assert plugin.model == "demo"
            return events

    events = asyncio.run(asyncio.wait_for(scenario(), DEADLINE_S))
    kinds = [e.type for e in speech_events(events)]
    assert kinds[0] == EV.START_OF_SPEECH and kinds[-2:] == [EV.FINAL_TRANSCRIPT, EV.END_OF_SPEECH], kinds
    assert set(kinds[1:-2]) <= {EV.INTERIM_TRANSCRIPT}, kinds
    final = next(e for e in events if e.type == EV.FINAL_TRANSCRIPT)
    data = final.alternatives[0]
    assert data.text == "turn left"
    assert data.language == "en" and 0 < data.confidence <= 1
    # the speech starts 0.5 s into the audio; the utterance keeps 300 ms before it (vad.prefix_padding_ms)
    assert 0.1 < data.start_time < 0.6 < data.end_time < 2.5
    assert data.words and [str(w) for w in data.words] == ["turn", "left"]
    assert all(data.start_time - 0.5 <= w.start_time < w.end_time <= data.end_time + 0.1 for w in data.words)
    meta = data.metadata
    assert meta is not None
    for key in ("emotion", "language", "event", "mood"):
        assert_distribution(meta[key])
    assert meta["language"]["label"] == "en" and meta["event"]["label"] == "speech"
    assert meta["gated"] is False and meta["gate_reasons"] == []
    assert final.request_id.endswith(":u1")
    assert any(e.type == EV.RECOGNITION_USAGE and e.recognition_usage for e in events)

    # the example agent puts that final's mood into the LLM's context
    mood = emostt.EmotionContext.from_metadata(meta)
    assert mood is not None and mood.mood == meta["mood"]["label"]
    assert mood.emotion == meta["emotion"]["label"]
    example = load_example()
    agent = example.EmotionAwareAgent()
    agent.mood = mood
    turn = ChatContext.empty()
    asyncio.run(agent.on_user_turn_completed(turn, turn.add_message(role="user", content=data.text)))
    system = [m for m in turn.messages() if m.role == "system"]
    assert len(system) == 1 and f"sounded {mood.mood}" in (system[0].text_content or "")


def test_flush_sends_finalize_and_the_final_comes_before_the_input_ends(
    server: Server, turn_left: np.ndarray
) -> None:
    spoken = np.concatenate([noise(0.3), turn_left[: int(0.75 * 16000)]])  # no silence to end it

    async def scenario() -> tuple[stt.SpeechEvent, list[stt.SpeechEvent]]:
        async with http():
            plugin = emostt.STT(url=f"http://{server.base}", token=TOKEN, device_id="lk-2", sample_rate=None)
            stream = plugin.stream()
            events = Events(stream)
            for frame in frames(spoken, rate=24000):  # native rate: the session is opened at 24 kHz
                stream.push_frame(frame)
            stream.flush()
            final = await events.next(EV.FINAL_TRANSCRIPT)  # the input is still open
            assert isinstance(stream.context, emostt.EmotionContext)
            stream.end_input()
            await events.reader
            await stream.aclose()
            return final, events.log[events.log.index(final) + 1 :]

    final, rest = asyncio.run(asyncio.wait_for(scenario(), DEADLINE_S))
    data = final.alternatives[0]
    assert data.text == "turn left"
    assert data.metadata is not None and data.metadata["end_reason"] == "finalize"
    assert [e.type for e in speech_events(rest)] == [EV.END_OF_SPEECH]


@pytest.fixture(scope="module")
def paused_turn(tmp_path_factory: pytest.TempPathFactory) -> np.ndarray:
    """One turn with a pause inside: "and then", 1.2 s, "turn left at the door." (espeak-ng, as in
    tests/integration/test_semantic_turns.py), then room noise."""
    folder = tmp_path_factory.mktemp("turn")
    fragment, rest = (
        read_audio_file(espeak(text, folder / f"{i}.wav", voice="en-us")) * 0.8
        for i, text in enumerate(("and then", "turn left at the door."))
    )
    return np.concatenate([noise(0.5), fragment, noise(1.2, 1), rest, noise(4.0, 2)])


def test_semantic_turns_preflight_at_the_pause_and_end_of_speech_at_the_turns_end(
    server: Server, paused_turn: np.ndarray
) -> None:
    """The real turn model (Smart Turn), eagerness low: fairly sure at the fragment's pause (a
    PREFLIGHT_TRANSCRIPT), then sure at the end. One FINAL_TRANSCRIPT and one END_OF_SPEECH."""

    async def scenario() -> list[stt.SpeechEvent]:
        async with http():
            turns = {"type": "semantic", "eagerness": "low"}
            plugin = emostt.STT(
                url=f"ws://{server.base}", token=TOKEN, device_id="lk-turns", turn_detection=turns
            )
            stream = plugin.stream()
            events = Events(stream)

            async def speak() -> None:  # in real time: the pauses are the turn model's cue
                for frame in frames(paused_turn, rate=16000, frame_ms=100):
                    stream.push_frame(frame)
                    await asyncio.sleep(0.1)

            speaker = asyncio.create_task(speak())
            await events.next(EV.END_OF_SPEECH)
            speaker.cancel()
            stream.end_input()
            await events.reader
            await stream.aclose()
            return events.log

    events = asyncio.run(asyncio.wait_for(scenario(), DEADLINE_S))
    kinds = [e.type for e in speech_events(events)]
    assert kinds[0] == EV.START_OF_SPEECH and kinds[-2:] == [EV.FINAL_TRANSCRIPT, EV.END_OF_SPEECH], kinds
    assert kinds.count(EV.END_OF_SPEECH) == 1 and kinds.count(EV.FINAL_TRANSCRIPT) == 1, kinds
    preflight = next(e for e in events if e.type == EV.PREFLIGHT_TRANSCRIPT).alternatives[0]
    assert preflight.text and preflight.metadata is not None
    assert 0.5 <= preflight.metadata["end_of_turn_confidence"] < 0.7  # eager, not sure: low's thresholds
    final = next(e for e in events if e.type == EV.FINAL_TRANSCRIPT).alternatives[0]
    assert final.metadata is not None and final.metadata["end_reason"] == "turn_model"
    assert final.metadata["end_of_turn_confidence"] >= 0.7
    assert final.start_time < 1.0 < 2.5 < final.end_time  # one utterance across the pause


def test_recognize_over_rest_returns_text_and_emotion(server: Server, turn_left: np.ndarray) -> None:
    async def scenario() -> stt.SpeechEvent:
        async with http():
            plugin = emostt.STT(url=f"ws://{server.base}", token=TOKEN)
            return await plugin.recognize(frames(utterance(turn_left), rate=16000, frame_ms=20))

    event = asyncio.run(asyncio.wait_for(scenario(), DEADLINE_S))
    assert event.type == EV.FINAL_TRANSCRIPT
    data = event.alternatives[0]
    assert data.text == "turn left" and data.language == "en" and 0 < data.confidence <= 1
    assert 0.1 < data.start_time < 0.6 < data.end_time < 2.5
    assert data.metadata is not None
    for key in ("emotion", "language", "event"):
        assert_distribution(data.metadata[key])
    assert data.metadata["segments"][0]["text"] == "turn left"


@contextlib.contextmanager
def server_on(port: int, engine: SenseVoiceEngine, **overrides: Any) -> Iterator[Server]:
    """running_server, on a port chosen by the test (a restarted server comes back on the same one)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(server_module, "free_port", lambda: port)
        with running_server(settings(**overrides), engine) as srv:
            patch.undo()
            yield srv


def test_the_framework_retry_loop_survives_a_server_restart(
    engine: SenseVoiceEngine, turn_left: np.ndarray, caplog: pytest.LogCaptureFixture
) -> None:
    port = free_port()
    errors: list[stt.STTError] = []
    # the second server has emostt's default rate limits: audio may come at most 5 s
    # (burst_audio_s) ahead of real time, or the session is closed with a fatal rate_limited
    default_limits = {"max_realtime_factor": 2.0, "burst_audio_s": 5.0, "receive_queue_size": 128}

    async def scenario() -> tuple[stt.SpeechEvent, stt.SpeechEvent]:
        first_server = contextlib.ExitStack()
        second_server = contextlib.ExitStack()
        await asyncio.to_thread(first_server.enter_context, server_on(port, engine))
        try:
            async with http():
                plugin = emostt.STT(url=f"ws://127.0.0.1:{port}", token=TOKEN, device_id="lk-restart")
                plugin.on("error", errors.append)
                # the framework's own retry loop; generous so a slow restart on a busy machine fits
                options = APIConnectOptions(max_retry=40, retry_interval=0.25, timeout=5.0)
                stream = plugin.stream(conn_options=options)
                events = Events(stream)
                for frame in frames(utterance(turn_left, seed=1)):
                    stream.push_frame(frame)
                before = await events.next(EV.FINAL_TRANSCRIPT)

                # SIGTERM's drain: the session is closed with 1012, the server goes away
                await asyncio.to_thread(first_server.close)
                # the speaker goes on while nothing listens: 8.5 s wait in the stream's input
                # channel; the newest 3 s (max_backlog_s) go to the next session
                for frame in frames(np.concatenate([noise(6.0, 5), utterance(turn_left, 3, 0.3, 1.2)])):
                    stream.push_frame(frame)
                restarted = server_on(port, engine, **default_limits)
                await asyncio.to_thread(second_server.enter_context, restarted)
                after = await events.next(EV.FINAL_TRANSCRIPT)
                stream.end_input()
                await events.reader
                await stream.aclose()
                return before, after
        finally:
            await asyncio.to_thread(second_server.close)
            await asyncio.to_thread(first_server.close)

    with caplog.at_level(logging.WARNING, logger="livekit.plugins.emostt"):
        before, after = asyncio.run(asyncio.wait_for(scenario(), 3 * DEADLINE_S))
    assert before.alternatives[0].text == after.alternatives[0].text == "turn left"
    meta_before, meta_after = before.alternatives[0].metadata, after.alternatives[0].metadata
    assert meta_before and meta_after and meta_before["session_id"] != meta_after["session_id"]
    assert errors and all(e.recoverable for e in errors), errors  # retried, never given up
    first = errors[0].error
    assert isinstance(first, APIStatusError) and first.status_code == 1012 and first.retryable, repr(first)
    dropped = [float(m[1]) for r in caplog.records if (m := re.match(r"dropping ([\d.]+) s", r.getMessage()))]
    assert len(dropped) == 1 and 5.0 < dropped[0] < 6.0, caplog.text  # 8.5 s queued, 3 s kept


def test_a_bad_token_fails_once_without_retrying(server: Server, turn_left: np.ndarray) -> None:
    upgrades: list[str] = []
    errors: list[stt.STTError] = []

    async def on_request(_: Any, __: Any, params: aiohttp.TraceRequestStartParams) -> None:
        upgrades.append(str(params.url))

    async def scenario() -> tuple[BaseException, BaseException]:
        trace = aiohttp.TraceConfig()
        trace.on_request_start.append(on_request)
        async with aiohttp.ClientSession(trace_configs=[trace]) as session:
            plugin = emostt.STT(url=f"ws://{server.base}", token="wrong", http_session=session)
            plugin.on("error", errors.append)
            stream = plugin.stream(conn_options=APIConnectOptions(max_retry=3, retry_interval=0.1))
            stream.push_frame(frames(turn_left)[0])
            with pytest.raises(APIError) as streamed:
                async for _ in stream:
                    pass
            await stream.aclose()
            with pytest.raises(APIError) as recognized:
                await plugin.recognize(frames(turn_left), conn_options=APIConnectOptions(max_retry=3))
            return streamed.value, recognized.value

    streamed, recognized = asyncio.run(asyncio.wait_for(scenario(), DEADLINE_S))
    assert isinstance(streamed, APIStatusError) and not streamed.retryable
    assert streamed.status_code == 1008 and isinstance(streamed.body, dict)
    assert streamed.body["code"] == "unauthorized"
    assert isinstance(recognized, APIStatusError) and recognized.status_code == 401
    assert not recognized.retryable
    assert len([u for u in upgrades if "/ws/stt/" in u]) == 1, upgrades  # exactly one attempt each
    assert len([u for u in upgrades if u.endswith("/v1/audio/transcriptions")]) == 1, upgrades
    assert [e.recoverable for e in errors] == [False, False], errors


def test_livekit_openai_realtime_stt_against_v1_realtime(server: Server, turn_left: np.ndarray) -> None:
    """livekit-plugins-openai's own Realtime transcription client, pointed at emostt's /v1/realtime."""

    async def scenario() -> list[stt.SpeechEvent]:
        async with http():
            plugin = lk_openai.STT(
                use_realtime=True,
                base_url=f"http://{server.base}/v1",
                api_key=TOKEN,
                model="gpt-4o-transcribe",
                language="en",
            )
            stream = plugin.stream()
            events = Events(stream)
            for frame in frames(utterance(turn_left)):  # 48 kHz in; the plugin sends 24 kHz appends
                stream.push_frame(frame)
            await events.next(EV.FINAL_TRANSCRIPT)
            # end_input() would stop the audio but not the socket (the server's idle_timeout would
            # end it, as a fatal error): an agent's stream is closed like this
            await stream.aclose()
            await plugin.aclose()
            return events.log

    events = asyncio.run(asyncio.wait_for(scenario(), DEADLINE_S))
    kinds = [e.type for e in speech_events(events)]
    # OpenAI's order: speech_stopped (END_OF_SPEECH) comes before the item's transcription
    assert kinds[0] == EV.START_OF_SPEECH and kinds.index(EV.END_OF_SPEECH) < kinds.index(EV.FINAL_TRANSCRIPT)
    final = events[[e.type for e in events].index(EV.FINAL_TRANSCRIPT)].alternatives[0]
    assert final.text == "turn left" and final.language == "en"


@pytest.mark.parametrize(
    ("code", "error_code", "kind", "retryable"),
    [
        (None, None, APIConnectionError, True),  # no close frame: a network loss
        (1006, None, APIConnectionError, True),
        (1011, "internal_error", APIStatusError, True),
        (1012, "shutting_down", APIStatusError, True),
        (1013, "overloaded", APIStatusError, True),
        (1000, "session_too_long", APIStatusError, True),  # the agent's stream outlives a session
        (1008, "unauthorized", APIStatusError, False),
        (1008, "rate_limited", APIStatusError, False),
        (1009, None, APIStatusError, False),
    ],
)
def test_close_codes_map_to_the_framework_errors(
    code: int | None, error_code: str | None, kind: type[APIError], retryable: bool
) -> None:
    error = parse_event({"type": "error", "code": error_code, "message": "…"}) if error_code else None
    assert error is None or isinstance(error, Error)
    mapped = close_error(code, error, "closed")
    assert type(mapped) is kind and mapped.retryable is retryable
