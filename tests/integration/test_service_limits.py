"""Bad input and abusive clients get the documented outcome; other sessions are unaffected."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from emostt.inference.sensevoice import EngineOptions, SenseVoiceEngine
from tests.integration.server import Server, pcm16, running_server, service_settings, stream

TOKENS = {"secret-any": "*", "secret-robot": "robot-1"}


@pytest.fixture(scope="module")
def server(tiny_model_dir: Path) -> Iterator[Server]:
    engine = SenseVoiceEngine.load(str(tiny_model_dir), EngineOptions(device="cpu", precision="fp32"))
    settings = service_settings(
        auth_tokens=TOKENS,
        allowed_origins=["https://app.example"],
        max_message_bytes=64 * 1024,
        max_connections=12,
        idle_timeout_s=1.5,
    )
    with running_server(settings, engine) as srv:
        yield srv


AUTH = {"Authorization": "Bearer secret-any"}


def one_phrase(speech: np.ndarray) -> bytes:
    return pcm16(speech[: 8000 + 32000])


@pytest.mark.parametrize(
    ("kwargs", "query"),
    [
        ({"headers": {"Authorization": "Bearer wrong"}}, ""),
        ({}, ""),
        ({}, "token=wrong"),
        ({"subprotocols": ["emostt.v1", "bearer.wrong"]}, ""),
    ],
)
def test_wrong_or_missing_token_closes_1008(server: Server, kwargs: dict, query: str) -> None:
    transcript = asyncio.run(stream(server.ws_url(query=query), b"", messages=[], **kwargs))
    assert transcript.close_code == 1008
    assert transcript.of("error")[0]["code"] == "unauthorized"
    assert not transcript.of("ready")


@pytest.mark.parametrize(
    ("kwargs", "query", "device"),
    [
        ({"headers": AUTH}, "", "robot-1"),
        ({}, "token=secret-any", "robot-1"),
        ({"subprotocols": ["emostt.v1", "bearer.secret-robot"]}, "", "robot-1"),
        ({"headers": {"Authorization": "Bearer secret-robot"}}, "", "robot-1"),
    ],
)
def test_each_way_to_present_a_token(server: Server, kwargs: dict, query: str, device: str) -> None:
    transcript = asyncio.run(stream(server.ws_url(device, query=query), b"", messages=[], **kwargs))
    assert transcript.of("ready") and transcript.close_code == 1000


def test_token_bound_to_another_device(server: Server) -> None:
    headers = {"Authorization": "Bearer secret-robot"}
    transcript = asyncio.run(stream(server.ws_url("robot-2"), b"", messages=[], headers=headers))
    assert transcript.close_code == 1008 and "device_id" in transcript.of("error")[0]["message"]


def test_bad_device_id_and_origin(server: Server) -> None:
    transcript = asyncio.run(stream(server.ws_url("bad%20id!"), b"", messages=[], headers=AUTH))
    assert transcript.close_code == 1008 and transcript.of("error")[0]["code"] == "invalid_device_id"
    evil = {**AUTH, "Origin": "https://evil.example"}
    transcript = asyncio.run(stream(server.ws_url(), b"", messages=[], headers=evil))
    assert transcript.close_code == 1008 and transcript.of("error")[0]["code"] == "origin_not_allowed"
    good = {**AUTH, "Origin": "https://app.example"}
    assert asyncio.run(stream(server.ws_url(), b"", messages=[], headers=good)).close_code == 1000


def test_oversized_frame_closes_1009(server: Server) -> None:
    transcript = asyncio.run(
        stream(server.ws_url(), b"", messages=[b"\x00" * (65 * 1024)], headers=AUTH, close=False)
    )
    assert transcript.close_code == 1009


def test_malformed_and_unknown_messages_get_errors_and_the_session_goes_on(
    server: Server, speech_with_pauses: np.ndarray
) -> None:
    pcm = one_phrase(speech_with_pauses)
    messages: list[str | bytes] = [
        "{not json",
        '["a list"]',
        '{"type": "dance"}',
        '{"audio": "zz-not-hex"}',
        '{"type": "config", "vad": {"threshold": 7}}',
        '{"type": "keepalive"}',
        *[pcm[i : i + 3200] for i in range(0, len(pcm), 3200)],
        '{"type": "finalize"}',
    ]
    transcript = asyncio.run(stream(server.ws_url(), b"", messages=messages, headers=AUTH))
    codes = [e["code"] for e in transcript.of("error")]
    assert codes == [
        "invalid_message",
        "invalid_message",
        "unknown_message_type",
        "invalid_message",
        "invalid_config",
    ]
    assert "vad.threshold" in transcript.of("error")[4]["message"]
    assert len(transcript.of("final")) == 1 and transcript.close_code == 1000


def test_odd_byte_counts_carry_over(server: Server, speech_with_pauses: np.ndarray) -> None:
    pcm = pcm16(speech_with_pauses)
    sizes = [3201, 1599, 7, 4093]
    chunks: list[str | bytes] = []
    i = 0
    while i < len(pcm):
        size = sizes[len(chunks) % len(sizes)]
        chunks.append(pcm[i : i + size])
        i += size
    odd = asyncio.run(stream(server.ws_url(), b"", messages=chunks, headers=AUTH))
    even = asyncio.run(stream(server.ws_url(), pcm, headers=AUTH))
    assert [(f["audio_start_ms"], f["audio_end_ms"], f["text"]) for f in odd.of("final")] == [
        (f["audio_start_ms"], f["audio_end_ms"], f["text"]) for f in even.of("final")
    ]


def test_binary_garbage_is_treated_as_audio_without_harm(server: Server) -> None:
    garbage = np.random.default_rng(0).bytes(64_000)
    transcript = asyncio.run(stream(server.ws_url(), garbage, headers=AUTH))
    assert transcript.close_code == 1000 and not transcript.of("error")
    assert server.get("/healthz").status_code == 200


def test_silent_client_is_closed_after_the_idle_timeout(server: Server) -> None:
    transcript = asyncio.run(stream(server.ws_url(), b"", messages=[], headers=AUTH, close=False, timeout=20))
    assert transcript.of("error")[0]["code"] == "idle_timeout"
    assert transcript.close_code == 1000


def test_disconnect_mid_utterance_does_not_hurt_others(
    server: Server, speech_with_pauses: np.ndarray
) -> None:
    async def quitter() -> None:
        async with connect(server.ws_url(), additional_headers=AUTH) as ws:
            await ws.recv()
            await ws.send(pcm16(speech_with_pauses[:20000]))  # mid-phrase, then vanish

    async def scenario() -> list:
        return await asyncio.gather(
            quitter(), quitter(), stream(server.ws_url("robot-9"), pcm16(speech_with_pauses), headers=AUTH)
        )

    results = asyncio.run(scenario())
    assert len(results[2].of("final")) == 3
    assert server.get("/readyz").json()["sessions"] == 0


def test_faster_than_real_time_is_closed(tiny_model_dir: Path, speech_with_pauses: np.ndarray) -> None:
    engine = SenseVoiceEngine.load(str(tiny_model_dir), EngineOptions(device="cpu", precision="fp32"))
    settings = service_settings(max_realtime_factor=1.5, burst_audio_s=1.0)
    with running_server(settings, engine) as srv:
        transcript = asyncio.run(stream(srv.ws_url(), pcm16(np.tile(speech_with_pauses, 3))))
    assert transcript.close_code == 1008
    assert transcript.of("error")[-1]["code"] == "rate_limited"


def test_connection_limit_answers_1013(server: Server) -> None:
    async def scenario() -> list[int | None]:
        holders = []
        for i in range(12):
            ws = await connect(server.ws_url(f"hold-{i}"), additional_headers=AUTH)
            await ws.recv()
            holders.append(ws)
        try:
            extra = await stream(server.ws_url("one-too-many"), b"", messages=[], headers=AUTH)
            return [extra.close_code, extra.of("error")[0]["code"]]
        finally:
            for ws in holders:
                await ws.close()

    code, error = asyncio.run(scenario())
    assert code == 1013 and error == "too_many_connections"


def test_unknown_path_is_not_a_websocket(server: Server) -> None:
    async def attempt() -> None:
        async with connect(f"ws://{server.base}/nope"):
            pass

    with pytest.raises((InvalidStatus, ConnectionClosed)):
        asyncio.run(attempt())
