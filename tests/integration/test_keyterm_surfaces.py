"""Keyterms on every surface of a real server with the demo model: the /ws/stt ``keyterms`` config
(replaceable mid-session), the REST ``keyterms`` field and OpenAI's ``prompt`` through the
official ``openai`` client, and Realtime's ``transcription.prompt``. The clip is a held-out one
the demo model hears as "open the" (half_heard_clip, tests/integration/test_keyterms_engine.py); the
keyterm "door" recovers the word, and finals say which keyterms they matched."""

from __future__ import annotations

import io
from collections.abc import Iterator

import numpy as np
import openai
import orjson
import pytest
import soundfile as sf

from emostt.inference.engine import Engine
from tests.integration.server import Server, pcm16, running_server, service_settings, stream
from tests.integration.test_keyterms_engine import HELD, MISSED, half_heard_clip

RATE = 16_000


@pytest.fixture(scope="module")
def clip() -> np.ndarray:
    audio = half_heard_clip()
    noise = (np.random.default_rng(0).standard_normal(RATE) * 10 ** (-65 / 20)).astype(np.float32)
    return np.concatenate([noise[: RATE // 2], audio, noise]).astype(np.float32)


@pytest.fixture(scope="module")
def server(demo_engine: Engine) -> Iterator[Server]:
    with running_server(service_settings(session_defaults={}), demo_engine) as srv:
        yield srv


def config(**fields: object) -> str:
    return orjson.dumps({"type": "config", **fields}).decode()


async def test_ws_stt_keyterms_reach_the_decoder_and_can_be_replaced_mid_session(
    server: Server, clip: np.ndarray
) -> None:
    audio = pcm16(clip)
    chunks = [audio[i : i + 3200] for i in range(0, len(audio), 3200)]
    messages: list[str | bytes] = [
        *chunks,
        '{"type": "finalize"}',
        config(keyterms=[HELD, "Ada Lovelace"]),
        *chunks,
        '{"type": "finalize"}',
        config(keyterms=[MISSED]),
        *chunks,
        '{"type": "finalize"}',
    ]
    transcript = await stream(server.ws_url("keyterms"), b"", messages=messages)
    plain, first, second = transcript.of("final")
    assert "keyterms_matched" not in plain, "no keyterms: greedy decoding, no field"
    assert first["keyterms_matched"] == [HELD] and second["keyterms_matched"] == [MISSED]
    assert MISSED in second["text"]
    ready_config = transcript.of("config")[-1]["config"]
    assert ready_config["keyterms"] == [MISSED]


async def test_bad_keyterms_get_an_error_naming_the_field_and_the_session_goes_on(server: Server) -> None:
    messages: list[str | bytes] = [config(keyterms=["x" * 65]), config(keyterms=["a"] * 101)]
    transcript = await stream(server.ws_url("bad-keyterms"), b"", messages=messages)
    errors = transcript.of("error")
    assert [e["code"] for e in errors] == ["invalid_config", "invalid_config"]
    assert all("keyterms" in e["message"] for e in errors)
    assert transcript.close_code == 1000


def test_rest_keyterms_and_openai_prompt_bias_the_result(server: Server) -> None:
    raw = half_heard_clip()  # heard as "open the" without keyterms
    wav = io.BytesIO()
    sf.write(wav, raw, RATE, format="WAV", subtype="PCM_16")
    client = openai.OpenAI(base_url=f"http://{server.base}/v1", api_key="unused", max_retries=0)
    plain = client.audio.transcriptions.create(model="whisper-1", file=("a.wav", wav.getvalue()))
    prompted = client.audio.transcriptions.create(
        model="whisper-1", file=("a.wav", wav.getvalue()), prompt=f"{MISSED}, Ada Lovelace"
    )
    keyed = client.audio.transcriptions.create(
        model="whisper-1", file=("a.wav", wav.getvalue()), extra_body={"keyterms": [MISSED]}
    )
    assert MISSED not in plain.text
    assert MISSED in prompted.text and MISSED in keyed.text
