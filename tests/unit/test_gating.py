from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from emostt.inference.engine import Distribution, TranscriptionResult
from emostt.policy.gating import gate_reasons
from emostt.vocabulary.session_config import GatingConfig

prob = st.floats(0, 1)


def result(
    text: str = "turn left",
    conf: float = 0.9,
    emo: float = 0.8,
    lang: str = "en",
    lang_p: float = 0.9,
    event: str = "speech",
) -> TranscriptionResult:
    return TranscriptionResult(
        text=text,
        language=Distribution(lang, {lang: lang_p, "other": 1 - lang_p}),
        emotion=Distribution("happy", {"happy": emo, "sad": 1 - emo}),
        event=Distribution(event, {event: 1.0}),
        confidence=conf,
        duration_ms=1000,
    )


def test_trusted_result_has_no_reasons() -> None:
    assert gate_reasons(result(), GatingConfig(min_confidence=0.5, min_emotion_score=0.5)) == []


def test_each_reason() -> None:
    config = GatingConfig(min_confidence=0.5, min_emotion_score=0.7, min_language_score=0.95)
    assert gate_reasons(result(conf=0.2), config) == ["low_confidence", "low_language_score"]
    assert gate_reasons(result(emo=0.6, lang_p=0.99), config) == ["low_emotion_score"]
    assert gate_reasons(result(text="", lang="nospeech", lang_p=1.0), GatingConfig()) == [
        "empty_text",
        "nospeech",
    ]
    assert gate_reasons(result(event="laughter"), GatingConfig()) == ["event_laughter"]
    assert gate_reasons(result(event="bgm"), GatingConfig()) == []  # speech over music is speech
    assert gate_reasons(result(event="cough"), GatingConfig(gate_non_speech_events=False)) == []


@given(prob, prob, prob, prob)
def test_raising_a_threshold_never_removes_a_reason(conf: float, emo: float, low: float, high: float) -> None:
    low, high = sorted((low, high))
    r = result(conf=conf, emo=emo)
    loose = set(gate_reasons(r, GatingConfig(min_confidence=low, min_emotion_score=low)))
    strict = set(gate_reasons(r, GatingConfig(min_confidence=high, min_emotion_score=high)))
    assert loose <= strict


def test_thresholds_are_validated() -> None:
    with pytest.raises(ValueError, match="min_confidence"):
        GatingConfig(min_confidence=1.5)
