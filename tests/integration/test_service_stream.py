"""A device streams speech with pauses and gets speech_started -> partials -> final per utterance."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import orjson
import pytest
import soxr
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from emostt.inference.rich_tokens import EMOTION_TOKENS, LANGUAGE_TOKENS
from emostt.inference.sensevoice import EngineOptions, SenseVoiceEngine
from tests.integration.faults import FaultyEngine
from tests.integration.server import Server, pcm16, running_server, service_settings, stream

ENDPOINT_SILENCE_MS = 400  # service_settings' vad.silence_duration_ms
FINAL_FIELDS = {
    "utterance_id",
    "text",
    "confidence",
    "language",
    "emotion",
    "event",
    "gated",
    "gate_reasons",
    "degraded",
    "audio_start_ms",
    "audio_end_ms",
    "latency_ms",
    "duration_ms",
    "session_id",
    "seq",
}


@pytest.fixture(scope="module")
def server(tiny_model_dir: Path) -> Iterator[Server]:
    engine = SenseVoiceEngine.load(str(tiny_model_dir), EngineOptions(device="cpu", precision="fp32"))
    with running_server(service_settings(), engine) as srv:
        yield srv


def check_utterance_flow(events: list[dict], expected_utterances: int) -> list[dict]:
    assert events[0]["type"] == "ready"
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    assert len({e["session_id"] for e in events}) == 1
    finals = [e for e in events if e["type"] == "final"]
    assert len(finals) == expected_utterances, [e["type"] for e in events]
    for n, final in enumerate(finals, start=1):
        uid = f"u{n}"
        # emotion_changed names the final that caused it, and follows it (test_mood_events.py)
        mine = [e for e in events if e.get("utterance_id") == uid and e["type"] != "emotion_changed"]
        kinds = [e["type"] for e in mine]
        assert kinds[0] == "speech_started" and kinds[-1] == "final", kinds
        assert set(kinds[1:-1]) <= {"partial"}
        assert final["utterance_id"] == uid
        assert set(final) >= FINAL_FIELDS
        assert set(final["language"]["scores"]) == set(LANGUAGE_TOKENS)
        assert set(final["emotion"]["scores"]) == set(EMOTION_TOKENS)
        for dist in (final["language"], final["emotion"], final["event"]):
            assert abs(sum(dist["scores"].values()) - 1) < 1e-6
            assert dist["label"] == max(dist["scores"], key=dist["scores"].get)
        assert 0 <= final["confidence"] <= 1
        assert 0 <= final["audio_start_ms"] < final["audio_end_ms"]
        assert final["latency_ms"] >= 0
        for partial in (e for e in mine if e["type"] == "partial"):
            assert partial["audio_start_ms"] == final["audio_start_ms"]
            # A partial taken during the closing silence may reach past the final's trimmed end.
            assert partial["audio_end_ms"] <= final["audio_end_ms"] + ENDPOINT_SILENCE_MS + 32
    starts = [f["audio_start_ms"] for f in finals]
    assert starts == sorted(starts)
    return finals


def test_speech_with_pauses_gives_one_final_per_phrase(
    server: Server, speech_with_pauses: np.ndarray
) -> None:
    # 100 ms frames at twice real time: utterances last long enough for partials to come back.
    transcript = asyncio.run(stream(server.ws_url(), pcm16(speech_with_pauses), pace_s=0.05))
    finals = check_utterance_flow(transcript.events, expected_utterances=3)
    assert transcript.of("partial"), "partials flow while the person speaks"
    assert transcript.close_code == 1000
    # Utterances line up with the phrases: 0.5 s lead-in, then phrase, 1 s pause, phrase...
    assert finals[0]["audio_start_ms"] < 600
    assert all(f["end_reason"] == "silence" for f in finals[:2])


def test_48khz_stream(server: Server, speech_with_pauses: np.ndarray) -> None:
    audio_48k = soxr.resample(speech_with_pauses, 16_000, 48_000)
    transcript = asyncio.run(
        stream(server.ws_url(query="sample_rate=48000"), pcm16(audio_48k), chunk_bytes=9600)
    )
    assert transcript.events[0]["sample_rate"] == 48_000
    finals = check_utterance_flow(transcript.events, expected_utterances=3)
    ref = asyncio.run(stream(server.ws_url(), pcm16(speech_with_pauses)))
    for got, want in zip(finals, ref.of("final"), strict=True):
        assert abs(got["audio_start_ms"] - want["audio_start_ms"]) <= 96
        assert abs(got["audio_end_ms"] - want["audio_end_ms"]) <= 96


def test_sample_rate_in_config_before_audio(server: Server, speech_with_pauses: np.ndarray) -> None:
    pcm = pcm16(soxr.resample(speech_with_pauses, 16_000, 24_000))
    messages: list[str | bytes] = [
        '{"type": "config", "sample_rate": 24000}',
        *[pcm[i : i + 4800] for i in range(0, len(pcm), 4800)],
        '{"type": "config", "sample_rate": 16000}',
    ]
    transcript = asyncio.run(stream(server.ws_url(), b"", messages=messages))
    check_utterance_flow(transcript.events, 3)
    assert transcript.of("config")[0]["config"]["sample_rate"] == 24_000
    assert transcript.of("error")[0]["code"] == "invalid_config"
    assert "before the first audio" in transcript.of("error")[0]["message"]


def test_hex_and_base64_json_audio(server: Server, speech_with_pauses: np.ndarray) -> None:
    import base64

    pcm = pcm16(speech_with_pauses)
    chunks = [pcm[i : i + 3200] for i in range(0, len(pcm), 3200)]
    hex_messages: list[str | bytes] = [f'{{"audio": "{c.hex()}"}}' for c in chunks]
    b64_messages: list[str | bytes] = [
        f'{{"type": "audio", "data": "{base64.b64encode(c).decode()}"}}' for c in chunks
    ]
    for messages in (hex_messages, b64_messages):
        transcript = asyncio.run(stream(server.ws_url(), b"", messages=messages))
        check_utterance_flow(transcript.events, expected_utterances=3)


def test_finalize_ends_the_utterance_now(server: Server, speech_with_pauses: np.ndarray) -> None:
    pcm = pcm16(speech_with_pauses[: 8000 + 12000])  # lead-in and the middle of the first phrase
    messages: list[str | bytes] = [pcm[i : i + 3200] for i in range(0, len(pcm), 3200)] + [
        '{"type": "finalize"}'
    ]
    transcript = asyncio.run(stream(server.ws_url(), b"", messages=messages))
    finals = check_utterance_flow(transcript.events, expected_utterances=1)
    assert finals[0]["end_reason"] == "finalize"


def test_config_message_applies_and_is_echoed(server: Server, speech_with_pauses: np.ndarray) -> None:
    pcm = pcm16(speech_with_pauses)
    messages: list[str | bytes] = [
        '{"type": "config", "interim_results": false, "word_timestamps": true, "known_emotion_only": true}',
        *[pcm[i : i + 3200] for i in range(0, len(pcm), 3200)],
    ]
    transcript = asyncio.run(stream(server.ws_url(), b"", messages=messages))
    assert transcript.of("config")[0]["config"]["interim_results"] is False
    assert not transcript.of("partial")
    for final in transcript.of("final"):
        assert "unknown" not in final["emotion"]["scores"]
        assert isinstance(final["words"], list)


def test_shutdown_drains_sessions_with_their_finals(
    tiny_model_dir: Path, speech_with_pauses: np.ndarray
) -> None:
    engine = SenseVoiceEngine.load(str(tiny_model_dir), EngineOptions(device="cpu", precision="fp32"))
    pcm = pcm16(speech_with_pauses[: 8000 + 12000])  # stops mid-phrase: the utterance is still open

    async def scenario(srv: Server) -> tuple[list[dict], int | None, int]:
        async with connect(srv.ws_url()) as ws:
            events = [orjson.loads(await ws.recv())]
            await ws.send(pcm)
            while events[-1]["type"] != "speech_started":
                events.append(orjson.loads(await ws.recv()))
            srv.begin_shutdown()
            await asyncio.sleep(0.3)
            ready_status = await asyncio.to_thread(lambda: srv.get("/readyz").status_code)
            try:
                async for raw in ws:
                    events.append(orjson.loads(raw))
            except ConnectionClosed:
                pass
            return events, ws.close_code, ready_status

    slow = FaultyEngine(engine, delay_s=1.5)  # the final is still being computed while we probe readiness
    with running_server(service_settings(), slow) as srv:
        events, code, ready_status = asyncio.run(scenario(srv))
    assert ready_status == 503, "readiness fails as soon as draining starts"
    finals = [e for e in events if e["type"] == "final"]
    assert len(finals) == 1 and finals[0]["end_reason"] == "finalize"
    assert code == 1012
