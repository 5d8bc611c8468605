"""Finals decoded during the endpointing silence: same results as plain finals, and discarded
when speech resumes before the endpoint."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from emostt.audio import read_audio_file
from emostt.inference.engine import Engine
from tests.conftest import espeak
from tests.integration.server import Server, pcm16, running_server, service_settings, stream

COMPARED = ("utterance_id", "text", "confidence", "language", "emotion", "event", "audio_start_ms")
COMPARED += ("audio_end_ms", "end_reason")


@pytest.fixture(scope="module")
def speculating(tiny_engine: Engine) -> Iterator[Server]:
    with running_server(service_settings(), tiny_engine) as srv:
        yield srv


@pytest.fixture(scope="module")
def plain(tiny_engine: Engine) -> Iterator[Server]:
    with running_server(service_settings(speculative_finals=False), tiny_engine) as srv:
        yield srv


def speculative_count(server: Server, outcome: str) -> float:
    for family in text_string_to_metric_families(server.get("/metrics").text):
        if family.name == "emostt_speculative_finals":
            return sum(
                s.value
                for s in family.samples
                if s.name.endswith("_total") and s.labels.get("outcome") == outcome
            )
    return 0.0


def finals_of(server: Server, audio: np.ndarray) -> list[dict]:
    transcript = asyncio.run(stream(server.ws_url(), pcm16(audio), pace_s=0.02))
    assert transcript.close_code == 1000
    return transcript.of("final")


def test_speculative_finals_equal_plain_finals(
    speculating: Server, plain: Server, speech_with_pauses: np.ndarray
) -> None:
    used_before = speculative_count(speculating, "used")
    fast = finals_of(speculating, speech_with_pauses)
    used = speculative_count(speculating, "used") - used_before
    slow = finals_of(plain, speech_with_pauses)
    assert len(fast) == len(slow) == 3
    by_silence = [f for f in fast if f["end_reason"] == "silence"]
    assert len(by_silence) >= 2
    assert used == len(by_silence), "every final ended by silence was decoded before its endpoint"
    for a, b in zip(fast, slow, strict=True):
        assert {k: a[k] for k in COMPARED} == {k: b[k] for k in COMPARED}


def test_speech_resuming_in_the_silence_discards_the_speculation(speculating: Server, tmp_path: Path) -> None:
    first = read_audio_file(espeak("turn left", tmp_path / "a.wav"))
    second = read_audio_file(espeak("and stop", tmp_path / "b.wav"))
    silence = np.zeros(16_000, dtype=np.float32)
    # espeak-ng pads each phrase with silence; trimmed, the pause between them (~250 ms) is
    # shorter than the endpointing silence (400 ms) but longer than the trail a final keeps.
    first = first[:-1600]
    audio = np.concatenate([silence[:8000], first * 0.8, second * 0.8, silence])
    discarded_before = speculative_count(speculating, "discarded")
    finals = finals_of(speculating, audio)
    assert speculative_count(speculating, "discarded") - discarded_before >= 1
    assert len(finals) == 1, "the pause did not end the utterance"
    second_starts_ms = 1000 * (8000 + len(first)) / 16_000
    assert finals[0]["audio_end_ms"] > second_starts_ms, "the final covers both phrases"
