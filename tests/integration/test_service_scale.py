"""Many sessions at once, and what operators see: /metrics, /healthz, /readyz."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from emostt.inference.sensevoice import EngineOptions, SenseVoiceEngine
from tests.integration.server import Server, pcm16, running_server, service_settings, stream
from tests.ops.test_metric_names import COUNT_HISTOGRAMS


@pytest.fixture(scope="module")
def server(tiny_model_dir: Path) -> Iterator[Server]:
    engine = SenseVoiceEngine.load(str(tiny_model_dir), EngineOptions(device="cpu", precision="fp32"))
    # Admission by measured capacity is tested elsewhere (test_service_limits, tools/reliability.py
    # overload); here 20 sessions at 4x real time must all be admitted on however busy a machine.
    settings = service_settings(target_utilization=1.0, session_demand_prior=0.05, overload_wait_s=30.0)
    with running_server(settings, engine) as srv:
        yield srv


def histogram(server: Server, name: str) -> dict[str, float]:
    for family in text_string_to_metric_families(server.get("/metrics").text):
        if family.name == name:
            return {
                (s.labels.get("le") or s.name.removeprefix(name)): s.value
                for s in family.samples
                if not s.labels.get("kind")
            }
    raise AssertionError(f"{name} not exported")


def test_twenty_concurrent_sessions_all_get_their_finals(
    server: Server, speech_with_pauses: np.ndarray
) -> None:
    before = histogram(server, "emostt_batch_size")

    async def scenario() -> list:
        # Staggered starts, paced at about 4x real time: sessions overlap but are not in lockstep.
        async def one(i: int):  # type: ignore[no-untyped-def]
            await asyncio.sleep(i * 0.05)
            return await stream(server.ws_url(f"dev-{i}"), pcm16(speech_with_pauses), pace_s=0.025)

        return await asyncio.gather(*(one(i) for i in range(20)))

    transcripts = asyncio.run(scenario())
    for t in transcripts:
        assert len(t.of("final")) == 3, [e["type"] for e in t.events]
        assert t.close_code == 1000
    assert len({t.events[0]["session_id"] for t in transcripts}) == 20
    after = histogram(server, "emostt_batch_size")
    batches = after["_count"] - before["_count"]
    single = after["1.0"] - before["1.0"]
    assert batches - single > 0, "the batcher put several utterances into one batch"
    assert (after["_sum"] - before["_sum"]) / batches > 1.0
    # Sessions were served side by side, not one after another: all were open at one moment.
    assert max(t.ready_at for t in transcripts) < min(t.closed_at for t in transcripts)


def test_metrics_parse_and_follow_conventions(server: Server, speech_with_pauses: np.ndarray) -> None:
    asyncio.run(stream(server.ws_url(), pcm16(speech_with_pauses)))
    text = server.get("/metrics").text
    families = {f.name: f for f in text_string_to_metric_families(text)}
    ours = {name: f for name, f in families.items() if name.startswith("emostt_")}
    for name in (
        "emostt_vad_seconds",
        "emostt_queue_wait_seconds",
        "emostt_batch_inference_seconds",
        "emostt_endpoint_to_final_seconds",
        "emostt_partial_latency_seconds",
        "emostt_batch_size",
    ):
        assert ours[name].type == "histogram", name
        assert sum(s.value for s in ours[name].samples if s.name.endswith("_count")) > 0, name
    for name in (
        "emostt_utterances",
        "emostt_errors",
        "emostt_retries",
        "emostt_fallbacks",
        "emostt_gated",
        "emostt_rejected_connections",
        "emostt_partials",
    ):
        assert ours[name].type == "counter", name
    for name in ("emostt_active_sessions", "emostt_batcher_queue_depth"):
        assert ours[name].type == "gauge", name
    for family in ours.values():
        if family.type == "histogram" and family.name not in COUNT_HISTOGRAMS:
            assert family.name.endswith("_seconds")
        assert not any("device" in label or "session" in label for s in family.samples for label in s.labels)
    buckets = {s.labels["le"] for s in ours["emostt_endpoint_to_final_seconds"].samples if "le" in s.labels}
    assert {"0.05", "0.1", "0.2", "0.5"} <= buckets
    if shutil.which("promtool"):
        check = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True, text=True)
        assert check.returncode == 0, check.stdout + check.stderr


def test_health_and_readiness(server: Server) -> None:
    assert server.get("/healthz").json() == {"status": "ok"}
    ready = server.get("/readyz")
    assert ready.status_code == 200
    body = ready.json()
    assert body["ready"] is True and body["model"]["precision"] == "fp32"
