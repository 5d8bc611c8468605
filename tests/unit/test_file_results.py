"""A file's transcript from its segments (aggregate.py) and its OpenAI response formats."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from emostt.files.aggregate import delta, join_text, summarize, weighted_distribution
from emostt.files.segments import Segment
from emostt.files.transcribe import SegmentResult
from emostt.inference.engine import Distribution, TranscriptionResult, Word
from emostt.transport import openai_formats as formats


def result(
    text: str, *, emotion: str = "neutral", confidence: float = 0.9, nospeech: float = 0.0
) -> TranscriptionResult:
    return TranscriptionResult(
        text=text,
        language=Distribution("en", {"en": 1.0 - nospeech, "nospeech": nospeech}),
        emotion=Distribution(emotion, {emotion: 0.8, "unknown": 0.2}),
        event=Distribution("speech", {"speech": 1.0}),
        confidence=confidence,
        duration_ms=1000,
        words=[Word(text.split()[0], 100, 400, 0.9)] if text else [],
    )


def item(index: int, start_s: float, end_s: float, res: TranscriptionResult) -> SegmentResult:
    return SegmentResult(Segment(index, round(start_s * 16_000), round(end_s * 16_000), "silence"), res)


@pytest.mark.parametrize(
    ("texts", "joined"),
    [
        (["turn left", "stop"], "turn left stop"),
        (["你好", "谢谢"], "你好谢谢"),
        (["안녕하세요", "네"], "안녕하세요네"),
        (["hello", "你好", "robot"], "hello 你好 robot"),
        (["", " turn left ", "", "stop"], "turn left stop"),
        ([], ""),
    ],
)
def test_texts_join_with_spaces_except_between_cjk(texts: list[str], joined: str) -> None:
    assert join_text(texts) == joined


@given(st.lists(st.sampled_from(["turn left", "你好", "", " ok ", "ありがとう", "x"]), max_size=8))
def test_deltas_add_up_to_the_joined_text(texts: list[str]) -> None:
    so_far = ""
    for text in texts:
        so_far += delta(so_far, text)
    assert so_far == join_text(texts)


@given(
    st.lists(
        st.tuples(
            st.lists(st.floats(0.0, 1.0), min_size=3, max_size=3).filter(lambda s: sum(s) > 0),
            st.floats(0.01, 100.0),
        ),
        min_size=1,
        max_size=6,
    )
)
def test_a_weighted_mean_of_distributions_is_a_distribution(parts: list[tuple[list[float], float]]) -> None:
    distributions = []
    for scores, weight in parts:
        total = sum(scores)
        distributions.append(
            (Distribution("a", dict(zip("abc", (s / total for s in scores), strict=True))), weight)
        )
    mean = weighted_distribution(distributions)
    assert mean is not None
    assert sum(mean.scores.values()) == pytest.approx(1.0)
    assert mean.label == max(mean.scores, key=mean.scores.__getitem__)


def test_the_summary_weighs_segments_by_duration() -> None:
    results = [
        item(0, 0.0, 9.0, result("a long passage", emotion="happy", confidence=1.0)),
        item(1, 10.0, 11.0, result("no", emotion="sad", confidence=0.0)),
    ]
    summary = summarize(results, duration_s=12.0)
    assert summary.text == "a long passage no"
    assert summary.confidence == pytest.approx(0.9)
    assert summary.emotion is not None and summary.emotion.label == "happy"
    assert summary.emotion.scores["happy"] == pytest.approx(0.8 * 0.9)
    assert summary.emotion.scores["sad"] == pytest.approx(0.8 * 0.1)
    empty = summarize([], duration_s=3.0)
    assert (empty.text, empty.confidence, empty.emotion) == ("", None, None)


def test_srt_and_vtt_cues_skip_empty_segments_and_count_hours() -> None:
    results = [
        item(0, 1.5, 2.25, result("turn left")),
        item(1, 5.0, 6.0, result("")),
        item(2, 3725.0, 3726.5, result("stop")),
    ]
    assert formats.srt_body(results) == (
        "1\n00:00:01,500 --> 00:00:02,250\nturn left\n\n2\n01:02:05,000 --> 01:02:06,500\nstop\n"
    )
    assert formats.vtt_body(results) == (
        "WEBVTT\n\n00:00:01.500 --> 00:00:02.250\nturn left\n\n01:02:05.000 --> 01:02:06.500\nstop\n"
    )


def test_verbose_json_has_openais_fields_and_ours() -> None:
    results = [item(0, 0.5, 2.0, result("turn left", nospeech=0.25)), item(1, 3.0, 4.0, result("stop"))]
    summary = summarize(results, duration_s=4.5)
    body = formats.verbose_body(results, summary, ("segment", "word"), "auto")
    assert json.loads(json.dumps(body)) == body, "plain JSON"
    assert (body["task"], body["language"], body["duration"], body["text"]) == (
        "transcribe",
        "english",
        4.5,
        "turn left stop",
    )
    first = body["segments"][0]
    assert first["start"] == 0.5 and first["end"] == 2.0 and first["seek"] == 50
    assert first["tokens"] == [] and first["temperature"] == 0.0
    assert first["no_speech_prob"] == 0.25
    assert first["emotion"]["label"] == "neutral" and first["language"]["label"] == "en"
    assert body["words"] == [
        {"word": "turn", "start": 0.6, "end": 0.9},
        {"word": "stop", "start": 3.1, "end": 3.4},
    ]
    assert body["usage"] == {"type": "duration", "seconds": 4.5}
    assert set(body) >= {"emotion", "event", "detected_language", "confidence"}
    only_words = formats.verbose_body(results, summary, ("word",), "auto")
    assert "segments" not in only_words and "words" in only_words


def test_a_file_without_speech_reports_the_hint_or_unknown() -> None:
    summary = summarize([], duration_s=2.0)
    assert formats.verbose_body([], summary, ("segment",), "ja")["language"] == "japanese"
    body = formats.verbose_body([], summary, ("segment",), "auto")
    assert body["language"] == "unknown" and body["segments"] == [] and body["emotion"] is None
    assert formats.done_event(summary) == {
        "type": "transcript.text.done",
        "text": "",
        "languages": [],
        **formats.extras(summary),
    }
