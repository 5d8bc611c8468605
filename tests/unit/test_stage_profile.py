"""tools/stage_profile.py: py-spy's raw stacks to stages, and threads' CPU to stage CPU."""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tools"))
import stage_profile as sp

LOOP = "thread (100): MainThread;<module> (bench_server.py:57);Runner.run (asyncio/runners.py:118)"
VAD = (
    "thread (101): emostt-vad;Thread.run (threading.py:982);SupervisedThread._run (emostt/supervision.py:65);"
    "VadBatcher._loop (emostt/streaming/vad.py:137)"
)


def stage_of(line: str) -> str:
    parsed = sp.parse_line(line)
    assert parsed is not None
    name, _, frames, _ = parsed
    return sp.classify(name, frames)


def test_parse_a_raw_line() -> None:
    parsed = sp.parse_line(LOOP + ";Session._on_audio (emostt/streaming/session.py:321) 7")
    assert parsed is not None
    name, tid, frames, count = parsed
    assert (name, tid, count) == ("MainThread", 100, 7)
    assert frames[-1] == sp.Frame("Session._on_audio", "emostt/streaming/session.py")
    assert sp.parse_line("garbage") is None


SESSION = "emostt/streaming/session.py"
RUNTIME = "emostt/transport/runtime.py"
CONNECTION = "emostt/transport/connection.py"
SANSIO = "uvicorn/protocols/websockets/websockets_sansio_impl.py"


def frames(*pairs: str) -> str:
    """``frames("f", "file.py", ...)``: py-spy's ``;f (file.py:1)`` for each pair."""
    return "".join(f";{function} ({file}:1)" for function, file in zip(pairs[::2], pairs[1::2], strict=True))


@pytest.mark.parametrize(
    ("tail", "stage"),
    [
        (frames("_receive", RUNTIME, "WebSocket.receive", "starlette/websockets.py"), "ws_receive"),
        (
            frames("_receive", RUNTIME, "Connection.decode", CONNECTION, "decode_stt", CONNECTION),
            "ws_receive",
        ),
        (frames("Protocol.data_received", SANSIO), "ws_receive"),
        (frames("Session._on_audio", SESSION, "Framer.push", "emostt/streaming/framing.py"), "resample"),
        (frames("Session._on_audio", SESSION, "pcm16_to_float32", "emostt/audio.py"), "resample"),
        (frames("Session._on_audio", SESSION), "segmentation"),
        (
            frames("Session._on_audio", SESSION, "Segmenter.push", "emostt/streaming/segmenter.py"),
            "segmentation",
        ),
        (frames("Session._on_audio", SESSION, "VadBatcher.speech_probs", "emostt/streaming/vad.py"), "vad"),
        (frames("Session._deliver_final", SESSION), "batching"),
        (frames("deliver_partial", "emostt/streaming/partials.py"), "batching"),
        (frames("final_events", "emostt/streaming/finals.py"), "events"),
        (frames("Batcher._submit", "emostt/batching/batcher.py"), "batching"),
        # A send: the service frame that called the library decides.
        (
            frames(
                "Session._send_final",
                SESSION,
                "Connection.emit",
                CONNECTION,
                "Connection._send_locked",
                CONNECTION,
                "WebSocket.send_text",
                "starlette/websockets.py",
                "Protocol.send",
                SANSIO,
            ),
            "events",
        ),
        (frames("final", "emostt/streaming/events.py"), "events"),
        (frames("Histogram.observe", "prometheus_client/metrics.py"), "metrics_logging"),
        (frames("BaseEventLoop._run_once", "asyncio/base_events.py"), "event_loop"),
        ("", sp.NATIVE_LOOP),
        (frames("something", "somewhere/else.py"), "other"),
    ],
)
def test_stages_of_the_loop_thread(tail: str, stage: str) -> None:
    assert stage_of(LOOP + tail + " 1") == stage


def test_threads_of_their_own() -> None:
    assert stage_of(VAD + ";VadBatcher._run (emostt/streaming/vad.py:153) 3") == "vad"
    assert stage_of(VAD + ";Condition.wait (threading.py:327) 3") == sp.IDLE
    worker = "thread (102): emostt-model-0-final;Batcher._loop (emostt/batching/batcher.py:300)"
    assert stage_of(worker + ";Batcher._run (emostt/batching/batcher.py:330) 1") == "batching"
    assert stage_of(worker + ";InstantEngine.transcribe (emostt/inference/instant.py:70) 1") == "engine"
    assert stage_of(worker + ";TorchPass.__call__ (emostt/inference/sensevoice.py:140) 1") == "engine"


def test_thread_cpu_divides_by_samples() -> None:
    samples = {
        100: sp.ThreadSamples("MainThread", Counter({"ws_receive": 20, "resample": 10, sp.NATIVE_LOOP: 500})),
        101: sp.ThreadSamples("emostt-vad", Counter({"vad": 30, sp.IDLE: 70})),
        102: sp.ThreadSamples("emostt-model-0-final", Counter({sp.IDLE: 50})),
    }
    # 100 Hz: the loop's 30 working samples are 0.3 s of its 0.5 s; the rest is the loop's own.
    cpu = sp.stage_cpu(samples, {100: 0.5, 101: 0.4, 102: 0.05, 103: 0.01}, rate_hz=100)
    assert cpu["ws_receive"] == pytest.approx(0.2)
    assert cpu["resample"] == pytest.approx(0.1)
    assert cpu["event_loop"] == pytest.approx(0.2)
    assert cpu["vad"] == pytest.approx(0.4)  # idle samples left out: its CPU is all VAD
    assert cpu["batching"] == pytest.approx(0.05)  # only idle samples: the thread's own stage
    assert cpu["other"] == pytest.approx(0.01)  # a thread py-spy never saw
    summary = sp.summarize(
        samples, {100: 0.5, 101: 0.4, 102: 0.05, 103: 0.01}, 100, window_s=1.0, sessions=10
    )
    assert summary["window_cpu_percent"] == pytest.approx(96.0)
    assert summary["stages"]["vad"]["cpu_us_per_stream_s"] == pytest.approx(40_000)
    assert "| vad |" in sp.markdown(summary)
