"""Mood with the bundled demo model's own emotions: clips of one speaking style then another change
the mood once per change, and one clip of another style in a steady run changes nothing.

The clips are the demo data's held-out voice ``en+m5`` at a held-out speed (tools/demo_data.py):
sad and angry are its most reliable styles (docs/BENCHMARKS.md: 83/84 and 76/81 held-out clips),
neutral the baseline the mood starts from.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import orjson
import pytest

from emostt.inference.sensevoice import SenseVoiceEngine
from emostt.vocabulary.labels import MOOD_LABELS
from tests.integration.server import Server, Transcript, pcm16, running_server, service_settings, stream
from tests.integration.test_service_stream import check_utterance_flow

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tools"))
import demo_data

VOICE, SPEED = "en+m5", 168
PHRASES = ("turn left", "go forward", "what time is it", "open the door", "i need help", "thank you")
# Clips come about every two seconds: a 4 s half-life lets a run of four or five change the mood.
MOOD = {"half_life_s": 4}


def clip(emotion: str, index: int) -> np.ndarray:
    spec = demo_data.ClipSpec("speech", PHRASES[index % len(PHRASES)], "en", emotion, "speech", VOICE, SPEED)
    return demo_data.make_clip(spec).audio


def room_noise(samples: int, seed: int) -> np.ndarray:
    """A microphone's noise floor (-65 dBFS), as in the demo model's training data."""
    return (np.random.default_rng(seed).standard_normal(samples) * 10 ** (-65 / 20)).astype(np.float32)


def session_audio(styles: list[str]) -> np.ndarray:
    parts = [room_noise(16_000, 0)]
    for i, style in enumerate(styles):
        parts += [clip(style, i), room_noise(16_000, i + 1)]
    return np.concatenate(parts)


@pytest.fixture(scope="module")
def server(demo_engine: SenseVoiceEngine) -> Iterator[Server]:
    with running_server(service_settings(session_defaults={"interim_results": False}), demo_engine) as srv:
        yield srv


def run(server: Server, sessions: dict[str, list[str]]) -> dict[str, Transcript]:
    async def all_of_them() -> list[Transcript]:
        config = orjson.dumps({"type": "config", "mood": MOOD}).decode()
        jobs = []
        for name, styles in sessions.items():
            pcm = pcm16(session_audio(styles))
            chunks = [pcm[i : i + 3200] for i in range(0, len(pcm), 3200)]
            jobs.append(stream(server.ws_url(f"robot-{name}"), b"", messages=[config, *chunks]))
        return await asyncio.gather(*jobs)

    return dict(zip(sessions, asyncio.run(all_of_them()), strict=True))


def changes(transcript: Transcript) -> list[tuple[str, str, int]]:
    """(from, to, the index of the final that changed it)."""
    finals = [f["utterance_id"] for f in transcript.of("final")]
    return [(e["from"], e["to"], finals.index(e["utterance_id"])) for e in transcript.of("emotion_changed")]


def test_mood_follows_a_change_of_style_and_not_one_outlier(server: Server) -> None:
    scripts = {
        "change": ["neutral"] * 3 + ["sad"] * 5 + ["angry"] * 6,
        "sad_outlier": ["sad"] * 5 + ["angry"] + ["sad"] * 3,
        "neutral_outlier": ["neutral"] * 4 + ["sad"] + ["neutral"] * 3,
    }
    sessions = run(server, scripts)
    for name, transcript in sessions.items():
        finals = check_utterance_flow(transcript.events, len(scripts[name]))
        for final in finals:
            assert set(final["mood"]["scores"]) == set(MOOD_LABELS)
            assert abs(sum(final["mood"]["scores"].values()) - 1) < 1e-9
        for event in transcript.of("emotion_changed"):  # right after its final, agreeing with it
            final = transcript.events[event["seq"] - 2]
            assert final["type"] == "final" and final["utterance_id"] == event["utterance_id"]
            assert final["mood"]["label"] == event["to"] and final["mood"]["scores"] == event["scores"]
        labels = [f["emotion"]["label"] for f in finals]
        assert sum(a == b for a, b in zip(labels, scripts[name], strict=True)) >= len(labels) - 2, labels

    change = changes(sessions["change"])
    assert [(a, b) for a, b, _ in change] == [("neutral", "sad"), ("sad", "angry")], change
    # Each from the second clip of its run or later: no one utterance changes the mood.
    assert 3 + 1 <= change[0][2] < 8, change
    assert change[1][2] >= 8 + 1, change
    assert sessions["change"].of("final")[-1]["mood"]["label"] == "angry"

    outlier = sessions["sad_outlier"]
    assert [(a, b) for a, b, _ in changes(outlier)] == [("neutral", "sad")]
    assert changes(outlier)[0][2] < 5, "the mood was sad before the outlier"
    assert all(f["mood"]["label"] == "sad" for f in outlier.of("final")[5:])

    assert changes(sessions["neutral_outlier"]) == []
    assert all(f["mood"]["label"] == "neutral" for f in sessions["neutral_outlier"].of("final"))
