"""Every utterance ends, whatever ends the session; admission recovers; crashed threads restart.

Real server, real websocket clients, real engine on the generated tiny model. Faults are
injected only where a fault is the point (a gated or failing engine, a failing VAD batch).
"""

from __future__ import annotations

import asyncio
import math
import signal
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from prometheus_client import REGISTRY
from websockets.asyncio.client import connect

from emostt.inference.sensevoice import EngineOptions, SenseVoiceEngine
from emostt.transport.state import AppState
from tests.integration.faults import FaultyEngine, GatedEngine
from tests.integration.server import Server, Transcript, pcm16, running_server, service_settings, stream

WAIT_S = 60.0


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def app_state(server: Server) -> AppState:
    state: AppState = server.uvicorn_server.config.app.state.emostt  # type: ignore[attr-defined]
    return state


@pytest.fixture(scope="module")
def engine(tiny_model_dir: Path) -> SenseVoiceEngine:
    return SenseVoiceEngine.load(str(tiny_model_dir), EngineOptions(device="cpu", precision="fp32"))


def assert_every_utterance_ended(transcript: Transcript) -> None:
    """The protocol's promise: each speech_started gets exactly one final or error, in order."""
    started = [e["utterance_id"] for e in transcript.of("speech_started")]
    ended = [
        e["utterance_id"]
        for e in transcript.events
        if e["type"] == "final" or (e["type"] == "error" and "utterance_id" in e)
    ]
    assert started, "the test meant to start utterances"
    assert ended == started, (started, [e["type"] for e in transcript.events])


def open_utterance(speech: np.ndarray) -> bytes:
    """Speech with no trailing silence: the utterance is still open when the audio stops."""
    return pcm16(np.concatenate([np.zeros(4000, dtype=np.float32), speech]))


def test_idle_timeout_sends_the_open_utterances_final_first(
    engine: SenseVoiceEngine, speech_16k: np.ndarray
) -> None:
    settings = service_settings(idle_timeout_s=1.0)
    with running_server(settings, engine) as server:
        t = asyncio.run(stream(server.ws_url(), open_utterance(speech_16k), close=False))
    assert_every_utterance_ended(t)
    assert t.of("final")[-1]["end_reason"] == "finalize"
    assert t.events[-1]["type"] == "error" and t.events[-1]["code"] == "idle_timeout"
    assert t.close_code == 1000


def test_session_too_long_flushes_the_open_utterance(
    engine: SenseVoiceEngine, speech_16k: np.ndarray
) -> None:
    settings = service_settings(max_session_s=1.0)
    pcm = open_utterance(speech_16k)  # about 2.3 s, streamed in real time: the limit hits mid-speech
    with running_server(settings, engine) as server:
        t = asyncio.run(stream(server.ws_url(), pcm, pace_s=0.1, close=False))
    assert_every_utterance_ended(t)
    assert t.events[-1]["code"] == "session_too_long"
    assert t.close_code == 1000


def test_too_fast_client_gets_its_finals_then_1008(engine: SenseVoiceEngine, speech_16k: np.ndarray) -> None:
    settings = service_settings(receive_queue_size=2)
    pcm = open_utterance(speech_16k)
    with running_server(settings, engine) as server:
        t = asyncio.run(stream(server.ws_url(), pcm * 3, chunk_bytes=640, close=False))
    assert t.events[-1]["code"] == "too_fast"
    assert t.close_code == 1008
    if t.of("speech_started"):  # every utterance the server saw start still ends
        assert_every_utterance_ended(t)


def test_drop_gated_finals_are_not_sent_and_are_counted(
    engine: SenseVoiceEngine, speech_16k: np.ndarray
) -> None:
    gating = {"min_confidence": 1.0, "drop_gated": True}
    settings = service_settings(session_defaults={"vad": {"silence_duration_ms": 400}, "gating": gating})
    before = metric("emostt_utterances_total", outcome="dropped_gated")
    silence = np.zeros(16_000, dtype=np.float32)
    with running_server(settings, engine) as server:
        t = asyncio.run(stream(server.ws_url(), pcm16(np.concatenate([silence, speech_16k, silence]))))
    assert t.of("speech_started") and not t.of("final")
    assert metric("emostt_utterances_total", outcome="dropped_gated") - before == len(t.of("speech_started"))


def test_second_signal_ends_the_drain_with_an_error_for_each_unfinished_utterance(
    engine: SenseVoiceEngine, speech_16k: np.ndarray
) -> None:
    stuck = GatedEngine(engine)
    settings = service_settings(drain_timeout_s=120.0, speculative_finals=False, session_defaults={})

    async def scenario(server: Server) -> Transcript:
        client = asyncio.create_task(
            stream(server.ws_url(), open_utterance(speech_16k), messages=None, close=False, timeout=WAIT_S)
        )
        await asyncio.to_thread(stuck.entered.wait, WAIT_S)  # a partial or final is stuck in the model
        server.uvicorn_server.handle_exit(signal.SIGTERM, None)  # drain starts: the final cannot come
        server.uvicorn_server.handle_exit(signal.SIGTERM, None)  # the operator insists
        return await client

    with running_server(settings, stuck) as server:
        try:
            t = asyncio.run(scenario(server))
        finally:
            stuck.release.set()
    assert_every_utterance_ended(t)
    errors = [e for e in t.of("error") if "utterance_id" in e]
    assert errors and all(e["code"] == "shutting_down" and e["retryable"] for e in errors)
    assert t.close_code == 1012


def test_admission_follows_measured_capacity_and_recovers_when_load_ends(
    engine: SenseVoiceEngine, speech_16k: np.ndarray
) -> None:
    # Warm-up measures at least the injected 0.5 s for 2 s of audio on one worker, so capacity is
    # at most 1 x 0.5 / (0.25 x 1.0) = 2; the model's own time (more on a busy machine) lowers it.
    slow = FaultyEngine(engine, delay_s=0.5)  # a known cost, so the learned capacity is predictable
    settings = service_settings(
        warmup=True, model_workers=1, target_utilization=0.5, session_demand_prior=1.0
    )

    async def hold_open(server: Server, device: str, opened: asyncio.Event, done: asyncio.Event) -> None:
        async with connect(server.ws_url(device)) as ws:
            await ws.recv()  # ready
            opened.set()
            await done.wait()

    async def scenario(server: Server, admissible: int) -> dict[str, Any]:
        done = asyncio.Event()
        opened = [asyncio.Event() for _ in range(admissible)]
        holders = [
            asyncio.create_task(hold_open(server, f"dev-{i}", opened[i], done)) for i in range(admissible)
        ]
        for event in opened:
            await asyncio.wait_for(event.wait(), WAIT_S)
        full = await asyncio.to_thread(server.get, "/readyz")
        refused = await stream(server.ws_url("third"), b"", messages=[])
        done.set()
        await asyncio.gather(*holders)
        while app_state(server).connections:
            await asyncio.sleep(0.01)
        after = await asyncio.to_thread(server.get, "/readyz")
        admitted = await stream(server.ws_url("later"), b"", messages=[])
        return {"full": full, "refused": refused, "after": after, "admitted": admitted}

    with running_server(settings, slow) as server:
        capacity = app_state(server).batcher.capacity_sessions()  # type: ignore[union-attr]
        assert capacity is not None and 1.0 <= capacity <= 2.05, capacity
        # Sessions are admitted while one more still fits: floor(capacity) of them.
        result = asyncio.run(scenario(server, math.floor(capacity)))
    assert result["full"].status_code == 503 and result["full"].json()["full"] is True
    assert result["full"].json()["capacity_sessions"] == pytest.approx(capacity, abs=0.1)
    refused = result["refused"]
    assert refused.close_code == 1013 and refused.of("error")[0]["code"] == "overloaded"
    assert not refused.of("ready")
    assert result["after"].status_code == 200, result["after"].json()
    assert result["admitted"].of("ready") and result["admitted"].close_code == 1000


def test_vad_failure_is_reported_and_the_thread_restarts(
    engine: SenseVoiceEngine, speech_with_pauses: np.ndarray
) -> None:
    crashes_before = metric("emostt_thread_crashes_total", thread="vad")
    with running_server(service_settings(), engine) as server:
        vad = app_state(server).vad
        assert vad is not None
        real_run_batch = vad.run_batch
        failures = iter([True])

        def fail_once(streams: Any, frames: np.ndarray) -> np.ndarray:
            if next(failures, False):
                raise RuntimeError("injected VAD failure")
            return real_run_batch(streams, frames)

        vad.run_batch = fail_once  # type: ignore[method-assign]
        t = asyncio.run(stream(server.ws_url(), pcm16(speech_with_pauses)))
        health = server.get("/healthz")
    errors = t.of("error")
    assert [e["code"] for e in errors] == ["vad_failed"] and "injected" not in errors[0]["message"]
    assert len(t.of("final")) == 3, "the session goes on: every phrase still gets its final"
    assert_every_utterance_ended(t)
    assert metric("emostt_thread_crashes_total", thread="vad") == crashes_before + 1
    assert health.status_code == 200


def test_a_thread_that_keeps_crashing_fails_liveness(engine: SenseVoiceEngine) -> None:
    with running_server(service_settings(), engine) as server:
        state = app_state(server)
        assert server.get("/healthz").status_code == 200
        assert state.vad is not None
        state.vad._thread.failed = "emostt-vad crashed 6 times in 60 s: RuntimeError"
        health = server.get("/healthz")
        ready = server.get("/readyz")
        refused = asyncio.run(stream(server.ws_url(), b"", messages=[]))
    assert health.status_code == 503 and "emostt-vad" in health.json()["error"]
    assert ready.status_code == 503
    assert refused.of("error")[0]["code"] == "not_ready" and refused.close_code == 1013
