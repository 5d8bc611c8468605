"""The bundled demo model end to end: held-out espeak-ng phrases streamed over the WebSocket
come back as finals with the right text, language and emotion (16 and 48 kHz, concurrent sessions)."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import soxr

from emostt.inference.sensevoice import SenseVoiceEngine
from tests.integration.server import Server, pcm16, running_server, service_settings, stream

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tools"))
import demo_data

SESSIONS = 6
CLIPS_PER_SESSION = 4
# A sample of held-out clips (unseen voices and speeds); docs/BENCHMARKS.md has the full evaluation
# (emotion 84 % of all held-out speech clips). This sample is a harder draw: the engine gets 71 % of
# its emotions right reading the clips whole, and streaming flips a few borderline happy/neutral
# calls either way, so the emotion floor leaves room for two or three clips.
MIN_TEXT, MIN_LANGUAGE, MIN_EMOTION = 0.8, 0.9, 0.6


@pytest.fixture(scope="module")
def clips() -> list[demo_data.Clip]:
    speech = [c for c in demo_data.generate("heldout", limit=120) if c.text and c.event == "speech"]
    assert len(speech) >= SESSIONS * CLIPS_PER_SESSION
    return speech[: SESSIONS * CLIPS_PER_SESSION]


@pytest.fixture(scope="module")
def server(demo_engine: SenseVoiceEngine) -> Iterator[Server]:
    with running_server(service_settings(session_defaults={}), demo_engine) as srv:
        yield srv


def room_noise(samples: int, seed: int = 0) -> np.ndarray:
    """A microphone's noise floor (-65 dBFS), as in the demo model's training data; see the note in README."""
    return (np.random.default_rng(seed).standard_normal(samples) * 10 ** (-65 / 20)).astype(np.float32)


def session_audio(clips: list[demo_data.Clip]) -> np.ndarray:
    gap = room_noise(16_000)
    return np.concatenate([part for clip in clips for part in (gap, clip.audio)] + [gap])


def score(finals: list[dict], clips: list[demo_data.Clip]) -> tuple[float, float, float]:
    assert len(finals) == len(clips), [f["text"] for f in finals]
    pairs = list(zip(finals, clips, strict=True))
    text = sum(f["text"] == c.text for f, c in pairs) / len(pairs)
    language = sum(f["language"]["label"] == c.language for f, c in pairs) / len(pairs)
    emotion = sum(f["emotion"]["label"] == c.emotion for f, c in pairs) / len(pairs)
    return text, language, emotion


def run_sessions(server: Server, clips: list[demo_data.Clip], rate: int) -> list[list[dict]]:
    groups = [clips[i::SESSIONS] for i in range(SESSIONS)]

    async def all_sessions() -> list:
        jobs = []
        for i, group in enumerate(groups):
            audio = session_audio(group)
            if rate != 16_000:
                audio = soxr.resample(audio, 16_000, rate)
            chunk = rate // 10 * 2  # 100 ms frames, as devices send them
            jobs.append(
                stream(server.ws_url(f"robot-{i}", f"sample_rate={rate}"), pcm16(audio), chunk_bytes=chunk)
            )
        return await asyncio.gather(*jobs)

    transcripts = asyncio.run(all_sessions())
    return [t.of("final") for t in transcripts], groups  # type: ignore[return-value]


@pytest.mark.parametrize("rate", [16_000, 48_000])
def test_heldout_phrases_come_back_right(server: Server, clips: list[demo_data.Clip], rate: int) -> None:
    finals_per_session, groups = run_sessions(server, clips, rate)
    finals = [f for session in finals_per_session for f in session]
    expected = [c for group in groups for c in group]
    text, language, emotion = score(finals, expected)
    assert text >= MIN_TEXT, (text, [(f["text"], c.text) for f, c in zip(finals, expected, strict=True)])
    assert language >= MIN_LANGUAGE, language
    assert emotion >= MIN_EMOTION, emotion


def test_a_command_is_understood_exactly(server: Server, tmp_path: Path) -> None:
    from emostt.audio import read_audio_file
    from tests.conftest import espeak

    audio = read_audio_file(espeak("turn left", tmp_path / "t.wav", voice="en-us+m2", speed=168))
    gap = room_noise(16_000)
    transcript = asyncio.run(stream(server.ws_url(), pcm16(np.concatenate([gap, audio * 0.5, gap]))))
    final = transcript.of("final")[0]
    assert final["text"] == "turn left"
    assert final["language"]["label"] == "en"
    assert final["event"]["label"] == "speech"
    assert not final["gated"]
