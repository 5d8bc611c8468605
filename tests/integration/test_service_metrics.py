"""The operators' metrics against a real server: speech-end -> final latency, degraded finals,
refusals by close code, and readiness as /readyz decides it."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import numpy as np
import pytest
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families
from websockets.asyncio.client import connect

from emostt.inference.engine import Engine
from tests.integration.faults import FaultyEngine
from tests.integration.server import Server, pcm16, running_server, service_settings, stream

SILENCE_MS = 400  # service_settings' vad.silence_duration_ms
FRAME_MS = 32
CHUNK_MS = 100  # stream()'s default chunk: 3200 bytes of 16 kHz s16le
TOKEN = "metrics-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def scraped(server: Server, name: str) -> float:
    """A sample as a scrape of /metrics reports it (gauges set at scrape time need the scrape)."""
    for family in text_string_to_metric_families(server.get("/metrics").text):
        for sample in family.samples:
            if sample.name == name and not sample.labels:
                return sample.value
    raise AssertionError(f"{name} not exported")


def phrase(speech: np.ndarray) -> bytes:
    """Half a second of silence, one spoken phrase, a second of silence."""
    silence = np.zeros(16_000, dtype=np.float32)
    return pcm16(np.concatenate([silence[:8000], speech * 0.8, silence]))


@pytest.fixture(scope="module")
def server(tiny_engine: Engine) -> Iterator[Server]:
    settings = service_settings(auth_tokens={TOKEN: "*"}, max_connections=1, max_message_bytes=64 * 1024)
    with running_server(settings, tiny_engine) as srv:
        yield srv


def test_speech_end_to_final_adds_the_endpointing_silence(server: Server, speech_16k: np.ndarray) -> None:
    before = {
        name: (metric(f"{name}_sum"), metric(f"{name}_count"))
        for name in ("emostt_speech_end_to_final_seconds", "emostt_endpoint_to_final_seconds")
    }
    # Real time: the endpointing silence takes as long to arrive as it would from a microphone.
    transcript = asyncio.run(
        stream(server.ws_url(), phrase(speech_16k), pace_s=CHUNK_MS / 1000, headers=AUTH)
    )
    finals = transcript.of("final")
    assert finals and all(f["end_reason"] == "silence" for f in finals)
    (speech_sum, speech_n), (endpoint_sum, endpoint_n) = (
        (metric(f"{name}_sum") - s, metric(f"{name}_count") - n) for name, (s, n) in before.items()
    )
    assert speech_n == endpoint_n == len(finals)
    # Per utterance, the difference is the time from the last speech audio's arrival to the
    # endpoint: at least the silence the endpointer waits for, less one chunk of granularity.
    waited = (speech_sum - endpoint_sum) / len(finals)
    silence_s = -(-SILENCE_MS // FRAME_MS) * FRAME_MS / 1000
    assert silence_s - CHUNK_MS / 1000 - 0.05 <= waited <= silence_s + 1.5, waited


def test_degraded_finals_are_counted(tiny_engine: Engine, speech_16k: np.ndarray) -> None:
    settings = service_settings(session_defaults={"interim_results": False}, retry_backoff_s=0.01)
    before = metric("emostt_degraded_finals_total")
    with running_server(settings, FaultyEngine(tiny_engine, always_fail=True), fallback=tiny_engine) as srv:
        degraded = asyncio.run(stream(srv.ws_url(), phrase(speech_16k))).of("final")
    assert degraded and all(f["degraded"] for f in degraded)
    assert metric("emostt_degraded_finals_total") - before == len(degraded)


def test_healthy_finals_are_not_degraded(server: Server, speech_16k: np.ndarray) -> None:
    before = metric("emostt_degraded_finals_total")
    finals = asyncio.run(stream(server.ws_url(), phrase(speech_16k), headers=AUTH)).of("final")
    assert finals and not any(f["degraded"] for f in finals)
    assert metric("emostt_degraded_finals_total") == before


def test_refusals_are_counted_by_close_code_and_readiness_follows_readyz(server: Server) -> None:
    def counts() -> dict[str, float]:
        return {
            **{
                code: metric("emostt_refused_connections_total", code=code)
                for code in ("1008", "1009", "1013")
            },
            **{
                reason: metric("emostt_rejected_connections_total", reason=reason)
                for reason in ("unauthorized", "too_many_connections", "message_too_big")
            },
        }

    def ready() -> tuple[int, float]:
        return server.get("/readyz").status_code, scraped(server, "emostt_ready")

    async def scenario() -> tuple[list[int | None], tuple[int, float]]:
        intruder = await stream(server.ws_url(), b"", messages=[], headers={"Authorization": "Bearer no"})
        codes = [intruder.close_code]
        holder = await connect(server.ws_url("holder"), additional_headers=AUTH)
        try:
            await holder.recv()  # ready: the only session this server takes is open
            while_full = await asyncio.to_thread(ready)
            codes.append((await stream(server.ws_url("second"), b"", messages=[], headers=AUTH)).close_code)
        finally:
            await holder.close()
        # Poll: the server frees the slot once it has seen the close.
        deadline = asyncio.get_running_loop().time() + 10
        while server.get("/readyz").status_code != 200 and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.05)
        too_big = await stream(
            server.ws_url(), b"", messages=[b"\x00" * (65 * 1024)], headers=AUTH, close=False
        )
        codes.append(too_big.close_code)
        return codes, while_full

    assert ready() == (200, 1.0)
    before = counts()
    codes, while_full = asyncio.run(scenario())
    assert codes == [1008, 1013, 1009]
    # Full (readiness_reports_full): /readyz says 503 and the gauge says 0, from one decision.
    assert while_full == (503, 0.0)
    assert ready() == (200, 1.0)
    after = counts()
    assert {key: after[key] - before[key] for key in after} == {
        "1008": 1,
        "1009": 1,
        "1013": 1,
        "unauthorized": 1,
        "too_many_connections": 1,
        "message_too_big": 1,
    }
