"""The outbound schema and docs/protocol.md agree."""

from __future__ import annotations

from pathlib import Path

import pytest

from emostt.inference.engine import Distribution, TranscriptionResult
from emostt.streaming import events
from emostt.streaming.mood import EmotionChange, Mood

PROTOCOL = (Path(__file__).resolve().parents[2] / "docs" / "protocol.md").read_text()


@pytest.mark.parametrize("code", sorted(events.ERROR_CODES))
def test_every_error_code_is_documented(code: str) -> None:
    assert f"`{code}`" in PROTOCOL


def test_undocumented_codes_cannot_be_sent() -> None:
    with pytest.raises(AssertionError, match="undocumented"):
        events.error("boom", "x", False)


def test_final_event_fields_are_documented() -> None:
    dist = Distribution("x", {"x": 1.0})
    final = events.final(
        "u1",
        TranscriptionResult("hi", dist, dist, dist, 0.9, 1000, raw_text="<|en|>hi"),
        gate_reasons=[],
        degraded=False,
        end_reason="silence",
        audio_start_ms=0,
        audio_end_ms=1000,
        latency_ms=12.34,
    )
    assert "raw_text" not in final and final["latency_ms"] == 12.3
    for field in final:
        assert f"`{field}" in PROTOCOL, field


def test_mood_and_emotion_changed_fields_are_documented() -> None:
    dist = Distribution("x", {"x": 1.0})
    result = TranscriptionResult("hi", dist, dist, dist, 0.9, 1000)

    def final(mood: Mood | None = None) -> events.Event:
        return events.final(
            "u1",
            result,
            gate_reasons=[],
            degraded=False,
            end_reason="silence",
            audio_start_ms=0,
            audio_end_ms=1000,
            latency_ms=1.0,
            mood=mood,
        )

    assert "mood" not in final()  # mood.enabled false
    mood = Mood("sad", {"sad": 0.7, "neutral": 0.3})
    assert final(mood)["mood"] == {"label": "sad", "scores": {"sad": 0.7, "neutral": 0.3}}
    assert "`mood {label, scores}`" in PROTOCOL
    changed = events.emotion_changed(EmotionChange("neutral", "sad", mood.scores), "u1")
    assert changed == {
        "type": "emotion_changed",
        "from": "neutral",
        "to": "sad",
        "utterance_id": "u1",
        "scores": {"sad": 0.7, "neutral": 0.3},
    }
    assert "| `emotion_changed` |" in PROTOCOL
    for field in changed:
        assert f"`{field}`" in PROTOCOL, field
