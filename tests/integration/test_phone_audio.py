"""Phone audio: G.711 µ-law and A-law at 8 kHz, encoded by sox (as a phone network would), on
/ws/stt (``?encoding=``) and on OpenAI Realtime (``audio/pcmu``, ``audio/pcma``) with the
official ``openai`` client: the bundled demo model (trained on phone-line copies too,
docs/BENCHMARKS.md "Phone audio") hears "turn left", and every result is the one the same call
gets as 8 kHz PCM16 decoded by sox (the reference decoder), so the G.711 path adds nothing and
loses nothing; an encoding the server does not take is refused by name."""

from __future__ import annotations

import asyncio
import base64
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from openai import AsyncOpenAI

from emostt.inference.engine import Engine
from tests.integration.server import Server, running_server, service_settings, stream

SAMPLE = Path(__file__).resolve().parents[2] / "docs" / "samples" / "turn_left.wav"
SOX_ENCODING = {"mulaw": "mu-law", "alaw": "a-law"}


def g711(encoding: str, tmp: Path) -> tuple[bytes, bytes]:
    """turn_left.wav padded with room noise, as 8 kHz G.711 bytes from sox, and those bytes as
    sox decodes them to PCM16."""
    padded = tmp / "padded.wav"
    subprocess.run(["sox", str(SAMPLE), str(padded), "pad", "0.5", "1.5", "dither", "-s"], check=True)
    coded, decoded = tmp / f"turn_left.{encoding}", tmp / f"turn_left.{encoding}.s16"
    g711_raw = ["-t", "raw", "-r", "8000", "-c", "1", "-e", SOX_ENCODING[encoding], "-b", "8"]
    subprocess.run(["sox", str(padded), *g711_raw, str(coded)], check=True)
    subprocess.run(
        ["sox", *g711_raw, str(coded), "-t", "raw", "-e", "signed", "-b", "16", str(decoded)], check=True
    )
    return coded.read_bytes(), decoded.read_bytes()


def outcome(final: dict[str, Any]) -> tuple[Any, ...]:
    return (final["text"], final["language"], final["emotion"], final["event"], final["audio_end_ms"])


@pytest.fixture(scope="module")
def server(demo_engine: Engine) -> Iterator[Server]:
    with running_server(service_settings(session_defaults={}), demo_engine) as srv:
        yield srv


@pytest.mark.parametrize("encoding", ["mulaw", "alaw"])
async def test_g711_on_ws_stt_is_the_same_call_as_pcm16(
    server: Server, tmp_path: Path, encoding: str
) -> None:
    coded, reference = g711(encoding, tmp_path)
    url = server.ws_url(query=f"encoding={encoding}&sample_rate=8000")
    transcript = await stream(url, coded, chunk_bytes=800)  # 100 ms of 8 kHz G.711
    ready = transcript.of("ready")[0]
    assert ready["config"]["encoding"] == encoding and ready["sample_rate"] == 8000
    pcm = await stream(server.ws_url(query="sample_rate=8000"), reference, chunk_bytes=1600)
    finals = transcript.of("final")
    assert [f["text"] for f in finals] == ["turn left"], transcript.events
    assert [outcome(f) for f in finals] == [outcome(f) for f in pcm.of("final")]


async def test_an_encoding_the_server_does_not_take_is_refused_by_name(server: Server) -> None:
    transcript = await stream(server.ws_url(query="encoding=opus"), b"", messages=[])
    [error] = transcript.of("error")
    assert error["code"] == "invalid_config" and "encoding" in error["message"]
    assert transcript.close_code == 1008


async def realtime(server: Server, data: bytes, audio_format: dict[str, Any], chunk: int) -> list[Any]:
    client = AsyncOpenAI(base_url=f"http://{server.base}/v1", api_key="unused", max_retries=0)
    events: list[Any] = []
    async with client.realtime.connect(extra_query={"intent": "transcription"}) as connection:
        update = {
            "type": "transcription",
            "audio": {"input": {"format": audio_format, "turn_detection": None}},
        }
        await connection.session.update(session=update)  # type: ignore[arg-type]
        for i in range(0, len(data), chunk):
            await connection.input_audio_buffer.append(audio=base64.b64encode(data[i : i + chunk]).decode())
        await connection.input_audio_buffer.commit()
        async with asyncio.timeout(30):
            async for event in connection:
                events.append(event)
                if event.type == "conversation.item.input_audio_transcription.completed":
                    break
    return events


@pytest.mark.parametrize(("format_type", "encoding"), [("audio/pcmu", "mulaw"), ("audio/pcma", "alaw")])
async def test_openai_realtime_g711_with_the_official_client(
    server: Server, tmp_path: Path, format_type: str, encoding: str
) -> None:
    coded, reference = g711(encoding, tmp_path)
    events = await realtime(server, coded, {"type": format_type}, 800)  # 100 ms chunks
    updated = next(e for e in events if e.type == "session.updated")
    assert updated.session.audio.input.format.type == format_type
    pcm = await realtime(server, reference, {"type": "audio/pcm", "rate": 8000}, 1600)
    ours, theirs = events[-1], pcm[-1]
    assert ours.transcript == "turn left" == theirs.transcript
    for key in ("language", "emotion", "event"):
        assert ours.model_extra[key] == theirs.model_extra[key]
    assert np.isclose(sum(ours.model_extra["emotion"]["scores"].values()), 1.0, atol=1e-3)


async def test_g711_counts_one_byte_a_sample_against_the_real_time_limit(demo_engine: Engine) -> None:
    settings = service_settings(session_defaults={}, max_realtime_factor=1.0, burst_audio_s=2.0)
    with running_server(settings, demo_engine) as srv:
        three_seconds = bytes([0xFF]) * 8000 * 3  # µ-law silence, sent at once: 3 s of audio
        transcript = await stream(srv.ws_url(query="encoding=mulaw&sample_rate=8000"), three_seconds)
    assert [e["code"] for e in transcript.of("error")] == ["rate_limited"]
    assert transcript.close_code == 1008
