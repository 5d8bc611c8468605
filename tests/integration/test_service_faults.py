"""Engine faults: retried, split, served by the fallback, or reported; never silently lost."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest
from prometheus_client import REGISTRY

from emostt.inference.sensevoice import EngineOptions, SenseVoiceEngine
from tests.integration.faults import FaultyEngine
from tests.integration.server import Server, pcm16, running_server, service_settings, stream


@pytest.fixture(scope="module")
def engine(tiny_model_dir: Path) -> SenseVoiceEngine:
    return SenseVoiceEngine.load(str(tiny_model_dir), EngineOptions(device="cpu", precision="fp32"))


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def no_partials(settings_overrides: dict | None = None):  # type: ignore[no-untyped-def]
    return service_settings(
        session_defaults={"interim_results": False, "vad": {"silence_duration_ms": 400}},
        retry_backoff_s=0.01,
        **(settings_overrides or {}),
    )


async def many(server: Server, audio: np.ndarray, sessions: int) -> list:
    return await asyncio.gather(*(stream(server.ws_url(f"dev-{i}"), pcm16(audio)) for i in range(sessions)))


def test_transient_error_is_retried(engine: SenseVoiceEngine, speech_with_pauses: np.ndarray) -> None:
    faulty = FaultyEngine(engine, fail_first=2)
    before = metric("emostt_retries_total", reason="error")
    with running_server(no_partials(), faulty) as server:
        transcript = asyncio.run(stream(server.ws_url(), pcm16(speech_with_pauses)))
    finals = transcript.of("final")
    assert len(finals) == 3 and not transcript.of("error")
    assert not any(f["degraded"] for f in finals)
    assert metric("emostt_retries_total", reason="error") - before == 2


def test_oom_splits_the_batch(engine: SenseVoiceEngine, speech_with_pauses: np.ndarray) -> None:
    faulty = FaultyEngine(engine, oom_above=1, delay_s=0.2)  # the delay lets finals pile up into batches
    before = metric("emostt_retries_total", reason="oom_split")
    with running_server(no_partials(), faulty) as server:
        transcripts = asyncio.run(many(server, speech_with_pauses, 6))
    assert all(len(t.of("final")) == 3 and not t.of("error") for t in transcripts)
    assert max(faulty.calls) > 1, "some batch had more than one utterance"
    assert metric("emostt_retries_total", reason="oom_split") > before


def test_persistent_failure_goes_to_the_fallback(
    engine: SenseVoiceEngine, speech_with_pauses: np.ndarray
) -> None:
    primary = FaultyEngine(engine, always_fail=True)
    before = metric("emostt_fallbacks_total")
    with running_server(no_partials({"breaker_failures": 2}), primary, fallback=engine) as server:
        # Paced at real time: each utterance is a batch of its own.
        transcript = asyncio.run(stream(server.ws_url(), pcm16(speech_with_pauses), pace_s=0.1))
    finals = transcript.of("final")
    assert len(finals) == 3 and all(f["degraded"] for f in finals)
    assert metric("emostt_fallbacks_total") - before == 3
    # After two failed batches the breaker opens: the third goes straight to the fallback.
    assert len(primary.calls) == 2 * 3


def test_total_failure_gives_an_error_event_per_utterance(
    engine: SenseVoiceEngine, speech_with_pauses: np.ndarray
) -> None:
    before = metric("emostt_errors_total", code="inference_failed")
    with running_server(no_partials(), FaultyEngine(engine, always_fail=True)) as server:
        transcript = asyncio.run(stream(server.ws_url(), pcm16(speech_with_pauses)))
        assert server.get("/healthz").status_code == 200  # a failing engine is not a dead process
    assert not transcript.of("final")
    errors = transcript.of("error")
    assert [e["utterance_id"] for e in errors] == ["u1", "u2", "u3"]
    assert all(e["code"] == "inference_failed" and e["retryable"] for e in errors)
    assert metric("emostt_errors_total", code="inference_failed") - before == 3
    assert transcript.close_code == 1000


def test_overload_sheds_partials_then_refuses_new_sessions(
    engine: SenseVoiceEngine, speech_with_pauses: np.ndarray
) -> None:
    slow = FaultyEngine(engine, delay_s=0.4)
    settings = service_settings(
        max_batch_size=1,
        model_workers=1,  # one final worker at 0.4 s a batch: finals must queue
        overload_wait_s=0.2,
        partial_deadline_s=0.3,
        max_waiting=64,
        session_defaults={"partial_interval_ms": 100, "vad": {"silence_duration_ms": 300}},
    )

    def partials_dropped() -> float:
        # Shed at their deadline, or dropped unrun once their utterance's final was under way.
        return sum(metric("emostt_partials_total", outcome=o) for o in ("shed", "stale"))

    dropped_before = partials_dropped()

    async def scenario(server: Server) -> tuple[list, object]:
        busy = [
            asyncio.create_task(stream(server.ws_url(f"dev-{i}"), pcm16(speech_with_pauses)))
            for i in range(4)
        ]
        refused = None
        for _ in range(100):
            await asyncio.sleep(0.2)
            if server.get("/readyz").json()["queue_depth"] and partials_dropped() > dropped_before:
                refused = await stream(server.ws_url("late"), b"", messages=[])
                if refused.close_code == 1013:
                    break
        return await asyncio.gather(*busy), refused

    with running_server(settings, slow) as server:
        transcripts, refused = asyncio.run(scenario(server))
        depth = server.get("/readyz").json()["queue_depth"]
    assert refused is not None and refused.close_code == 1013  # type: ignore[attr-defined]
    assert refused.of("error")[0]["code"] == "overloaded"  # type: ignore[attr-defined]
    assert partials_dropped() > dropped_before
    for t in transcripts:  # finals are never the ones dropped
        assert len(t.of("final")) == 3
    assert depth == 0
