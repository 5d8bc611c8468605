"""Mood over the WebSocket, with the emotion scripted: every final carries the smoothed mood, and
``emotion_changed`` follows the final that changed it (next seq), once per sustained change.

The engine here is the real tiny engine with one injected fault: its emotion answer is replaced
by one chosen from the utterance's loudness (quiet: sad, loud: angry), so the script of emotions is
exact. tests/e2e/test_mood.py does the same with the demo model's own emotions.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np
import orjson
import pytest
from prometheus_client import REGISTRY

from emostt.audio import read_audio_file
from emostt.inference.engine import (
    Distribution,
    Engine,
    ModelInfo,
    TranscriptionRequest,
    TranscriptionResult,
)
from emostt.inference.rich_tokens import EMOTION_TOKENS, EVENT_TOKENS, LANGUAGE_TOKENS
from emostt.inference.sensevoice import EngineOptions, SenseVoiceEngine
from emostt.vocabulary.labels import MOOD_LABELS
from tests.conftest import espeak
from tests.integration.server import Server, Transcript, pcm16, running_server, service_settings, stream
from tests.integration.test_service_stream import check_utterance_flow

LEVELS = {"l": 0.9, "q": 0.3, "c": 0.12}  # loud, quiet, a cough
PHRASES = ("turn left", "open the door", "what time is it", "go forward")


class EmotionByLoudness:
    """Fault injection: the inner engine's results (a random tiny model's) with a scripted answer
    by the utterance's peak level: above 0.5 angry, above 0.2 sad, below that a cough (an angry
    one: gated all the same). Text, language, event and confidence are those of clear speech."""

    def __init__(self, inner: Engine) -> None:
        self.inner = inner

    @property
    def info(self) -> ModelInfo:
        return self.inner.info

    def transcribe(self, requests: Sequence[TranscriptionRequest]) -> list[TranscriptionResult]:
        results = self.inner.transcribe(requests)
        return [self._script(peak(q.audio), r) for q, r in zip(requests, results, strict=True)]

    @staticmethod
    def _script(level: float, result: TranscriptionResult) -> TranscriptionResult:
        return dataclasses.replace(
            result,
            text=result.text or "hello",
            language=_one_hot("en", LANGUAGE_TOKENS),
            emotion=_one_hot("angry" if level > 0.5 or level < 0.2 else "sad", EMOTION_TOKENS),
            event=_one_hot("cough" if level < 0.2 else "speech", EVENT_TOKENS),
            confidence=0.9,
        )


def peak(audio: np.ndarray) -> float:
    return float(np.max(np.abs(audio))) if len(audio) else 0.0


def _one_hot(label: str, labels: Iterable[str]) -> Distribution:
    return Distribution(label, {k: float(k == label) for k in labels})


@pytest.fixture(scope="module")
def server(tiny_model_dir: Path) -> Iterator[Server]:
    engine = SenseVoiceEngine.load(str(tiny_model_dir), EngineOptions(device="cpu", precision="fp32"))
    settings = service_settings(
        session_defaults={"interim_results": False, "vad": {"silence_duration_ms": 400}}
    )
    with running_server(settings, EmotionByLoudness(engine)) as srv:
        yield srv


@pytest.fixture(scope="module")
def phrases(tmp_path_factory: pytest.TempPathFactory) -> list[np.ndarray]:
    folder = tmp_path_factory.mktemp("mood")
    out = []
    for i, text in enumerate(PHRASES):
        audio = read_audio_file(espeak(text, folder / f"{i}.wav"))
        out.append(audio / peak(audio))
    return out


def script(phrases: list[np.ndarray], levels: str) -> bytes:
    """One phrase per letter of ``levels`` (see LEVELS), a second of silence around each."""
    silence = np.zeros(16_000, dtype=np.float32)
    parts = [silence]
    for i, level in enumerate(levels):
        parts += [phrases[i % len(phrases)] * LEVELS[level], silence]
    return pcm16(np.concatenate(parts))


def run(
    server: Server, phrases: list[np.ndarray], sessions: dict[str, tuple[str, dict]]
) -> dict[str, Transcript]:
    """Sessions at once: name -> (levels, mood config sent before the audio)."""

    async def all_of_them() -> list[Transcript]:
        jobs = []
        for name, (levels, mood) in sessions.items():
            pcm = script(phrases, levels)
            config = orjson.dumps({"type": "config", "mood": mood}).decode()
            messages: list[str | bytes] = [config, *[pcm[i : i + 3200] for i in range(0, len(pcm), 3200)]]
            jobs.append(stream(server.ws_url(f"dev-{name}"), b"", messages=messages))
        return await asyncio.gather(*jobs)

    return dict(zip(sessions, asyncio.run(all_of_them()), strict=True))


def changes(transcript: Transcript) -> list[tuple[str, str]]:
    return [(e["from"], e["to"]) for e in transcript.of("emotion_changed")]


START = {"label": "neutral", "scores": {k: float(k == "neutral") for k in MOOD_LABELS}}


def check_moods(transcript: Transcript, expected_utterances: int) -> list[dict]:
    """The usual utterance flow (emotion_changed aside), a mood on every final, and each
    emotion_changed right after the final that caused it, agreeing with that final's mood."""
    events = transcript.events
    finals = check_utterance_flow(events, expected_utterances)
    label, previous = "neutral", START
    for i, event in enumerate(events):
        if event["type"] == "final":
            mood = event["mood"]
            if event["gated"]:  # not evidence: the mood is as it was
                assert mood == previous
            previous = mood
            assert set(mood["scores"]) == set(MOOD_LABELS)
            assert abs(sum(mood["scores"].values()) - 1) < 1e-9
            assert mood["label"] in MOOD_LABELS
            follows = events[i + 1] if i + 1 < len(events) else {}
            if mood["label"] != label:
                assert follows["type"] == "emotion_changed", "a change is announced right after its final"
                assert follows["seq"] == event["seq"] + 1
                assert follows["utterance_id"] == event["utterance_id"]
                assert (follows["from"], follows["to"]) == (label, mood["label"])
                assert follows["scores"] == mood["scores"]
                label = mood["label"]
            else:
                assert follows.get("type") != "emotion_changed"
    return finals


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_moods_follow_a_scripted_change_and_ignore_one_outlier(
    server: Server, phrases: list[np.ndarray]
) -> None:
    fast = {"half_life_s": 4}
    before = {to: metric("emostt_emotion_changes_total", to=to) for to in ("sad", "angry")}
    sessions = run(
        server,
        phrases,
        {
            "change": ("qqqqllll", fast),  # sad, then angry
            "outlier": ("qqqqlqqq", fast),  # sad, with one angry utterance
            "gated": ("qqqqcccq", fast),  # sad, with three (angry) coughs
            "off": ("qqqqllll", {"enabled": False}),
        },
    )
    change = sessions["change"]
    check_moods(change, 8)
    assert changes(change) == [("neutral", "sad"), ("sad", "angry")]
    finals = change.of("final")
    assert [f["mood"]["label"] for f in finals][-1] == "angry"
    # No single utterance changes the mood: each change comes from the second final of a run or later.
    for e in change.of("emotion_changed"):
        index = next(i for i, f in enumerate(finals) if f["utterance_id"] == e["utterance_id"])
        assert index % 4 >= 1

    outlier = sessions["outlier"]
    finals = check_moods(outlier, 8)
    assert changes(outlier) == [("neutral", "sad")]
    assert finals[4]["emotion"]["label"] == "angry" and finals[4]["mood"]["label"] == "sad"
    assert finals[4]["mood"]["scores"]["angry"] > finals[3]["mood"]["scores"]["angry"]

    gated = sessions["gated"]
    finals = check_moods(gated, 8)
    assert [f["gated"] for f in finals] == [False] * 4 + [True] * 3 + [False]
    assert changes(gated) == [("neutral", "sad")]

    off = sessions["off"]
    check_utterance_flow(off.events, 8)
    assert all("mood" not in f for f in off.of("final")) and not off.of("emotion_changed")
    assert off.of("config")[0]["config"]["mood"] == {
        "enabled": False,
        "half_life_s": 15.0,
        "min_margin": 0.1,
        "min_updates": 2,
    }
    assert all(not f["gated"] for s in (change, outlier, off) for f in s.of("final"))
    assert metric("emostt_emotion_changes_total", to="sad") - before["sad"] == 3
    assert metric("emostt_emotion_changes_total", to="angry") - before["angry"] == 1


def test_invalid_mood_config_is_refused_by_field(server: Server, phrases: list[np.ndarray]) -> None:
    sessions = run(server, phrases, {"bad": ("qq", {"half_life_s": 0})})
    bad = sessions["bad"]
    errors = bad.of("error")
    assert [e["code"] for e in errors] == ["invalid_config"]
    assert "mood.half_life_s" in errors[0]["message"]
    assert bad.events[0]["config"]["mood"]["half_life_s"] == 15.0  # ready: the defaults
    # The session goes on with its config unchanged: moods as usual.
    assert all("mood" in f for f in check_moods(bad, 2))
    assert bad.close_code == 1000
