"""The OpenAI-compatible REST endpoints with the official ``openai`` client against a real server
(the bundled demo model): every response format, streaming, long files, limits, keys and load."""

from __future__ import annotations

import asyncio
import io
import re
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import openai
import pytest
import soundfile as sf
from openai import OpenAI
from prometheus_client import REGISTRY

from emostt.audio import read_audio_file
from emostt.inference.rich_tokens import EMOTION_TOKENS
from emostt.inference.sensevoice import SenseVoiceEngine
from tests.conftest import espeak
from tests.integration.faults import GatedEngine
from tests.integration.server import Server, pcm16, running_server, service_settings, stream

SAMPLE = Path(__file__).resolve().parents[2] / "docs" / "samples" / "turn_left.wav"
KEY, DEVICE_KEY = "test-key", "robot-key"
MAX_FILE_BYTES = 4 * 1024 * 1024
# Phrases the demo model knows (tools/demo_data.py), in the voice the e2e tests use.
PHRASES = [
    "turn left",
    "what time is it",
    "open the door",
    "play some music",
    "good morning",
    "turn off the lights",
    "set a timer",
    "call my mother",
    "close the window",
    "see you later",
    "what is the weather",
    "nice to meet you",
    "follow me",
    "thank you",
    "hello robot",
    "go forward",
]
WAIT_S = 30.0  # bound on hand-offs between threads: a hang fails the test instead of blocking it


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


@pytest.fixture(scope="module")
def engine(demo_engine: SenseVoiceEngine) -> SenseVoiceEngine:
    return demo_engine


@pytest.fixture(scope="module")
def server(engine: SenseVoiceEngine) -> Iterator[Server]:
    settings = service_settings(
        session_defaults={}, auth_tokens={KEY: "*", DEVICE_KEY: "robot-1"}, max_file_bytes=MAX_FILE_BYTES
    )
    with running_server(settings, engine) as srv:
        yield srv


@pytest.fixture(scope="module")
def client(server: Server) -> OpenAI:
    return OpenAI(base_url=f"http://{server.base}/v1", api_key=KEY, max_retries=0)


def room_noise(seconds: float, rng: np.random.Generator) -> np.ndarray:
    """A microphone's noise floor (-65 dBFS), as in the demo model's training data."""
    return (rng.standard_normal(int(seconds * 16_000)) * 10 ** (-65 / 20)).astype(np.float32)


def wav_bytes(audio: np.ndarray, rate: int = 16_000) -> bytes:
    buffer = io.BytesIO()
    sf.write(buffer, audio, rate, format="WAV", subtype="PCM_16")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def long_file(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """About a minute: the phrases, each after 1.5-3.3 s of room noise."""
    folder = tmp_path_factory.mktemp("long")
    rng = np.random.default_rng(0)
    parts = []
    for i, phrase in enumerate(PHRASES):
        speech = read_audio_file(espeak(phrase, folder / f"{i}.wav", voice="en-us+m2", speed=168))
        parts += [room_noise(1.5 + (i % 4) * 0.6, rng), speech * 0.5]
    audio = np.concatenate([*parts, room_noise(4.0, rng)])
    assert len(audio) >= 60 * 16_000
    return wav_bytes(audio)


def transcribe(client: OpenAI, **kwargs: Any) -> Any:
    with SAMPLE.open("rb") as file:
        return client.audio.transcriptions.create(file=file, model="whisper-1", **kwargs)


def parse_srt(text: str) -> list[tuple[int, float, float, str]]:
    def seconds(stamp: str) -> float:
        hours, minutes, rest = stamp.split(":")
        secs, millis = rest.split(",")
        return int(hours) * 3600 + int(minutes) * 60 + int(secs) + int(millis) / 1000

    cues = []
    for block in text.strip().split("\n\n"):
        number, times, *lines = block.split("\n")
        match = re.fullmatch(r"(\d\d:\d\d:\d\d,\d\d\d) --> (\d\d:\d\d:\d\d,\d\d\d)", times)
        assert match, times
        cues.append((int(number), seconds(match[1]), seconds(match[2]), "\n".join(lines)))
    return cues


def check_distribution(dist: dict[str, Any], labels: Sequence[str] | None = None) -> None:
    assert abs(sum(dist["scores"].values()) - 1) < 1e-3
    assert dist["label"] == max(dist["scores"], key=dist["scores"].get)
    if labels is not None:
        assert set(dist["scores"]) == set(labels)


# -------------------------------------------------------------------------------- formats


def test_the_served_model_is_listed_in_openais_shape(client: OpenAI) -> None:
    models = client.models.list()
    assert [m.id for m in models.data] == ["demo"]
    assert models.data[0].object == "model" and models.data[0].owned_by == "emostt"
    assert client.models.retrieve("demo").id == "demo"
    with pytest.raises(openai.NotFoundError) as caught:
        client.models.retrieve("whisper-1")
    assert caught.value.response.json()["error"]["code"] == "model_not_found"


def test_json(client: OpenAI) -> None:
    before = metric("emostt_file_responses_total", format="json")
    audio_before = metric("emostt_file_audio_seconds_total")
    result = transcribe(client)
    assert result.text == "turn left"
    assert result.usage.type == "duration" and 0.9 < result.usage.seconds < 1.2
    assert metric("emostt_file_responses_total", format="json") == before + 1
    assert metric("emostt_file_audio_seconds_total") == pytest.approx(
        audio_before + result.usage.seconds, abs=0.01
    )


def test_verbose_json_has_segments_words_and_scores(client: OpenAI) -> None:
    result = transcribe(client, response_format="verbose_json", timestamp_granularities=["segment", "word"])
    assert (result.text, result.language) == ("turn left", "english")
    assert 0.9 < result.duration < 1.2
    [segment] = result.segments
    assert 0 <= segment.start < segment.end <= result.duration
    assert segment.text == "turn left" and segment.id == 0
    assert 0 <= segment.no_speech_prob <= 1 and segment.avg_logprob <= 0
    extra = segment.model_extra
    check_distribution(extra["emotion"], EMOTION_TOKENS)
    check_distribution(extra["language"])
    check_distribution(extra["event"])
    assert extra["language"]["label"] == "en" and extra["event"]["label"] == "speech"
    assert 0 <= extra["confidence"] <= 1
    assert [w.word for w in result.words] == ["turn", "left"]
    assert all(0 <= w.start <= w.end <= result.duration for w in result.words)
    top = result.model_extra
    check_distribution(top["emotion"], EMOTION_TOKENS)
    assert top["emotion"] == extra["emotion"], "one segment: the file's scores are its scores"
    assert top["detected_language"]["label"] == "en"
    assert top["confidence"] == pytest.approx(extra["confidence"])


def test_srt(client: OpenAI) -> None:
    [(number, start, end, text)] = parse_srt(transcribe(client, response_format="srt"))
    assert (number, text) == (1, "turn left")
    assert 0 <= start < end <= 1.2


def test_text_and_vtt(client: OpenAI) -> None:
    assert transcribe(client, response_format="text") == "turn left\n"
    vtt = transcribe(client, response_format="vtt")
    header, cue = vtt.strip().split("\n\n")
    assert header == "WEBVTT"
    times, text = cue.split("\n")
    assert re.fullmatch(r"00:00:0\d\.\d{3} --> 00:00:0\d\.\d{3}", times) and text == "turn left"


def test_stream_yields_deltas_then_done(client: OpenAI) -> None:
    events = list(transcribe(client, stream=True))
    assert [e.type for e in events] == ["transcript.text.delta", "transcript.text.done"]
    assert events[0].delta == "turn left"
    done = events[-1]
    assert done.text == "turn left"
    assert [language.code for language in done.languages] == ["en"]
    check_distribution(done.model_extra["emotion"], EMOTION_TOKENS)


def test_a_long_file_comes_back_in_order(client: OpenAI, long_file: bytes) -> None:
    result = client.audio.transcriptions.create(
        file=("long.wav", long_file), model="whisper-1", response_format="verbose_json"
    )
    assert [s.text for s in result.segments] == PHRASES
    assert [s.id for s in result.segments] == list(range(len(PHRASES)))
    starts = [s.start for s in result.segments]
    assert starts == sorted(starts)
    assert all(a.end <= b.start for a, b in zip(result.segments, result.segments[1:], strict=False))
    assert result.text == " ".join(PHRASES)
    assert result.duration >= 60
    check_distribution(result.model_extra["emotion"], EMOTION_TOKENS)
    # Streamed: one delta per segment, in order, adding up to the text.
    events = list(
        client.audio.transcriptions.create(file=("long.wav", long_file), model="whisper-1", stream=True)
    )
    deltas = [e.delta for e in events if e.type == "transcript.text.delta"]
    assert [d.strip() for d in deltas] == PHRASES
    assert events[-1].type == "transcript.text.done" and events[-1].text == "".join(deltas) == result.text
    assert [
        c[3]
        for c in parse_srt(
            client.audio.transcriptions.create(
                file=("long.wav", long_file), model="whisper-1", response_format="srt"
            )
        )
    ] == PHRASES


# -------------------------------------------------------------------------------- errors and keys


def test_an_unreadable_file_is_a_400_in_openais_error_shape(client: OpenAI) -> None:
    before = metric("emostt_file_requests_total", outcome="invalid_request")
    with pytest.raises(openai.BadRequestError) as caught:
        client.audio.transcriptions.create(file=("notes.mp3", b"this is not audio" * 64), model="whisper-1")
    error = caught.value.response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert (error["type"], error["param"], error["code"]) == (
        "invalid_request_error",
        "file",
        "invalid_audio",
    )
    assert "could not be decoded" in error["message"]
    assert metric("emostt_file_requests_total", outcome="invalid_request") == before + 1


def test_bad_parameters_are_400(client: OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        transcribe(client, response_format="xml")  # type: ignore[arg-type]
    assert caught.value.response.json()["error"]["param"] == "response_format"


def test_an_oversize_file_is_a_413_while_it_is_read(client: OpenAI, server: Server) -> None:
    big = wav_bytes(np.zeros(MAX_FILE_BYTES // 2 + 16_000, dtype=np.float32))  # 2 bytes a sample
    assert len(big) > MAX_FILE_BYTES
    with pytest.raises(openai.APIStatusError) as caught:
        client.audio.transcriptions.create(file=("big.wav", big), model="whisper-1")
    assert caught.value.status_code == 413
    assert caught.value.response.json()["error"]["code"] == "file_too_large"

    def chunked() -> Iterator[bytes]:  # no Content-Length: the server counts what arrives
        yield b'--b\r\nContent-Disposition: form-data; name="model"\r\n\r\nwhisper-1\r\n'
        yield b'--b\r\nContent-Disposition: form-data; name="file"; filename="big.wav"\r\n\r\n'
        for i in range(0, len(big), 65_536):
            yield big[i : i + 65_536]
        yield b"\r\n--b--\r\n"

    response = httpx.post(
        f"http://{server.base}/v1/audio/transcriptions",
        content=chunked(),
        headers={"Content-Type": "multipart/form-data; boundary=b", "Authorization": f"Bearer {KEY}"},
        timeout=WAIT_S,
    )
    assert response.status_code == 413 and response.json()["error"]["code"] == "file_too_large"


def test_keys(server: Server) -> None:
    base = f"http://{server.base}/v1"
    with pytest.raises(openai.AuthenticationError) as caught:
        OpenAI(base_url=base, api_key="wrong-key", max_retries=0).models.list()
    assert caught.value.response.json()["error"]["code"] == "invalid_api_key"
    missing = httpx.get(f"{base}/models", timeout=WAIT_S)  # the openai client always sends a key
    assert missing.status_code == 401 and "didn't provide an API key" in missing.json()["error"]["message"]
    with pytest.raises(openai.AuthenticationError):
        transcribe(OpenAI(base_url=base, api_key="wrong-key", max_retries=0))
    assert transcribe(OpenAI(base_url=base, api_key=DEVICE_KEY, max_retries=0)).text == "turn left"


def test_without_tokens_the_endpoint_is_open(engine: SenseVoiceEngine) -> None:
    with running_server(service_settings(session_defaults={}), engine) as srv, SAMPLE.open("rb") as file:
        response = httpx.post(
            f"http://{srv.base}/v1/audio/transcriptions",
            files={"file": file},
            data={"model": "x"},
            timeout=WAIT_S,
        )
    assert response.status_code == 200 and response.json()["text"] == "turn left"


# -------------------------------------------------------------------------------- load


def wait_for(condition: Any, what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def test_busy_server_answers_429_and_503_with_retry_after(
    engine: SenseVoiceEngine, speech_with_pauses: np.ndarray
) -> None:
    gated = GatedEngine(engine)
    settings = service_settings(
        session_defaults={"interim_results": False},
        model_workers=1,
        partial_workers=0,
        max_file_requests=1,
        overload_wait_s=0.001,  # any live final that waits at all is overload
    )
    with running_server(settings, gated) as srv, ThreadPoolExecutor(2) as pool:
        client = OpenAI(base_url=f"http://{srv.base}/v1", api_key="any", max_retries=0)
        first = pool.submit(transcribe, client)
        assert gated.entered.wait(WAIT_S), "the first file reached the model"
        with pytest.raises(openai.RateLimitError) as limited:
            transcribe(client)
        assert limited.value.response.headers["retry-after"] == "1"
        assert limited.value.response.json()["error"]["code"] == "rate_limit_exceeded"

        live = pool.submit(asyncio.run, stream(srv.ws_url(), pcm16(speech_with_pauses)))
        wait_for(lambda: srv.get("/readyz").json()["queue_depth"] > 0, "a live final waiting for the model")
        with pytest.raises(openai.InternalServerError) as busy:
            transcribe(client)
        assert busy.value.status_code == 503 and busy.value.response.headers["retry-after"] == "1"
        assert busy.value.response.json()["error"]["code"] == "overloaded"

        gated.release.set()
        assert first.result(WAIT_S).text == "turn left"
        assert len(live.result(WAIT_S).of("final")) == 3


def test_a_client_that_leaves_cancels_its_transcription(engine: SenseVoiceEngine, long_file: bytes) -> None:
    gated = GatedEngine(engine)
    settings = service_settings(session_defaults={}, model_workers=1, partial_workers=0, max_file_requests=1)
    gone = 0.0

    def left() -> bool:
        return metric("emostt_file_requests_total", outcome="client_gone") > gone

    with running_server(settings, gated) as srv:
        url = f"http://{srv.base}/v1/audio/transcriptions"
        files, timeout = {"file": ("long.wav", long_file)}, httpx.Timeout(WAIT_S, read=1.0)
        gone = metric("emostt_file_requests_total", outcome="client_gone")
        with pytest.raises(httpx.ReadTimeout):  # gives up while its first segment is in the model
            httpx.post(url, files=files, data={"model": "whisper-1"}, timeout=timeout)
        wait_for(left, "the server to notice the client left")
        gone = metric("emostt_file_requests_total", outcome="client_gone")
        with httpx.stream(
            "POST", url, files=files, data={"model": "whisper-1", "stream": "true"}, timeout=timeout
        ) as events:
            assert events.status_code == 200  # headers come at once; the first delta waits for the model
        wait_for(left, "the server to notice the stream's client left")
        gated.release.set()
        wait_for(lambda: srv.get("/readyz").json()["queue_depth"] == 0, "the cancelled segments to go")
        # Both requests gave their slot back (max_file_requests=1).
        assert (
            transcribe(OpenAI(base_url=f"http://{srv.base}/v1", api_key="any", max_retries=0)).text
            == "turn left"
        )
