"""Property tests on the pure logits -> result functions."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from emostt.inference.engine import TranscriptionRequest
from emostt.inference.rich_tokens import QUERY_FRAMES, RichVocab, strip_rich_tags
from emostt.inference.scores import (
    FRAME_MS,
    CtcFrames,
    class_distribution,
    collapse_ctc,
    decode_utterance,
    group_words,
    utterance_confidence,
    without_label,
)

finite = st.floats(min_value=-50, max_value=0, allow_nan=False, allow_infinity=False)
LABELS = {"a": 10, "b": 11, "c": 12, "d": 13}


@given(st.lists(finite, min_size=4, max_size=4))
def test_distribution_sums_to_one_and_label_is_argmax(values: list[float]) -> None:
    logp = dict(zip(LABELS.values(), values, strict=True))
    dist = class_distribution(logp, LABELS)
    assert sum(dist.scores.values()) == pytest.approx(1.0, abs=1e-9)
    assert all(0.0 <= p <= 1.0 for p in dist.scores.values())
    assert dist.scores[dist.label] == max(dist.scores.values())
    assert set(dist.scores) == set(LABELS)


@given(st.lists(finite, min_size=4, max_size=4), st.floats(min_value=-20, max_value=20))
def test_distribution_ignores_a_common_shift(values: list[float], shift: float) -> None:
    base = class_distribution(dict(zip(LABELS.values(), values, strict=True)), LABELS)
    moved = class_distribution(dict(zip(LABELS.values(), [v + shift for v in values], strict=True)), LABELS)
    for label in LABELS:
        assert moved.scores[label] == pytest.approx(base.scores[label], abs=1e-9)


@given(st.lists(finite, min_size=4, max_size=4))
def test_without_label_drops_it_and_renormalises(values: list[float]) -> None:
    dist = class_distribution(dict(zip(LABELS.values(), values, strict=True)), LABELS)
    known = without_label(dist, "d")
    assert "d" not in known.scores and known.label != "d"
    assert sum(known.scores.values()) == pytest.approx(1.0, abs=1e-9)
    # Ratios between the remaining labels are kept.
    if dist.scores["b"] > 1e-12:
        assert known.scores["a"] / known.scores["b"] == pytest.approx(dist.scores["a"] / dist.scores["b"])


ids_strategy = arrays(np.int64, st.integers(0, 60), elements=st.integers(0, 4))


@given(ids_strategy)
def test_collapse_matches_the_ctc_definition(ids: np.ndarray) -> None:
    logp = np.log(np.full(len(ids), 0.5))
    spans = collapse_ctc(ids, logp, blank_id=0)
    expected = [int(k) for k, _ in itertools.groupby(ids.tolist()) if k != 0]
    assert [s.token_id for s in spans] == expected
    for s in spans:
        assert 0 <= s.first_frame <= s.last_frame < len(ids)
        assert all(ids[s.first_frame : s.last_frame + 1] == s.token_id)
        assert s.confidence == pytest.approx(0.5)
    assert [s.first_frame for s in spans] == sorted(s.first_frame for s in spans)


@given(ids_strategy, st.data())
def test_confidence_is_a_probability(ids: np.ndarray, data: st.DataObject) -> None:
    logp = np.array(data.draw(st.lists(finite, min_size=len(ids), max_size=len(ids))))
    spans = collapse_ctc(ids, logp, blank_id=0)
    assert all(0.0 <= s.confidence <= 1.0 for s in spans)
    assert 0.0 <= utterance_confidence(spans, logp) <= 1.0


def test_confidence_without_tokens_is_blank_certainty() -> None:
    assert utterance_confidence([], np.log(np.array([0.9, 0.7]))) == pytest.approx(0.8)


def test_group_words_joins_subwords_and_splits_cjk() -> None:
    words = group_words(
        [
            ("▁turn", 0, 60, 0.9),
            ("▁le", 120, 180, 0.8),
            ("ft", 180, 240, 0.6),
            ("你", 300, 360, 0.7),
            ("好", 360, 420, 0.5),
            ("▁", 420, 480, 0.9),
            ("ok", 480, 540, 0.95),
        ]
    )
    assert [(w.word, w.start_ms, w.end_ms) for w in words] == [
        ("turn", 0, 60),
        ("left", 120, 240),
        ("你", 300, 360),
        ("好", 360, 420),
        ("ok", 480, 540),
    ]
    assert words[1].confidence == pytest.approx(0.6)  # a word is as sure as its weakest piece


@given(st.lists(st.sampled_from(["▁a", "b", "▁cd", "你", "▁", "e"]), max_size=30))
def test_group_words_keeps_every_character_in_order(pieces: list[str]) -> None:
    timed = [(p, i * FRAME_MS, (i + 1) * FRAME_MS, 0.5) for i, p in enumerate(pieces)]
    words = group_words(timed)
    assert "".join(w.word for w in words) == "".join(p.replace("▁", "") for p in pieces)
    assert all(w.start_ms < w.end_ms for w in words)
    assert [w.start_ms for w in words] == sorted(w.start_ms for w in words)


def test_strip_rich_tags() -> None:
    assert strip_rich_tags("<|en|><|HAPPY|><|Speech|><|woitn|>turn <|unused_3|> left") == "turn left"
    assert strip_rich_tags("<|nospeech|><|EMO_UNKNOWN|>") == ""


PIECES = [
    "<unk>",
    "▁turn",
    "▁left",
    "<|en|>",
    "<|zh|>",
    "<|HAPPY|>",
    "<|EMO_UNKNOWN|>",
    "<|Speech|>",
    "<|BGM|>",
]
VOCAB = RichVocab(
    blank_id=0,
    languages={"en": 3, "zh": 4},
    emotions={"happy": 5, "unknown": 6},
    events={"speech": 7, "bgm": 8},
)


def _decode(ids: list[int]) -> str:
    return "".join(PIECES[i] for i in ids).replace("▁", " ").strip()


@settings(max_examples=max(50, settings.default.max_examples))
@given(
    st.lists(st.integers(0, len(PIECES) - 1), min_size=QUERY_FRAMES, max_size=40),
    st.data(),
    st.booleans(),
    st.booleans(),
)
def test_decode_utterance_gives_valid_results(
    ids: list[int], data: st.DataObject, known_only: bool, words: bool
) -> None:
    n = len(ids)
    best = np.array(data.draw(st.lists(finite, min_size=n, max_size=n)))
    blank = np.array(data.draw(st.lists(finite, min_size=n, max_size=n)))
    rich = VOCAB.rich_ids()
    query = np.array(
        data.draw(st.lists(finite, min_size=QUERY_FRAMES * len(rich), max_size=QUERY_FRAMES * len(rich)))
    ).reshape(QUERY_FRAMES, -1)
    frames = CtcFrames(np.array(ids), best, blank, query, rich)
    request = TranscriptionRequest(
        np.zeros(n * 960, dtype=np.float32), known_emotion_only=known_only, word_timestamps=words
    )
    result = decode_utterance(frames, VOCAB, request, _decode, PIECES.__getitem__)
    for dist in (result.language, result.emotion, result.event):
        assert sum(dist.scores.values()) == pytest.approx(1.0)
        assert dist.scores[dist.label] == max(dist.scores.values())
    assert ("unknown" in result.emotion.scores) is not known_only
    assert 0.0 <= result.confidence <= 1.0
    assert "<|" not in result.text
    assert set(result.text.split()) <= {"turn", "left"}
    if words:
        assert result.words is not None
        assert [w.word for w in result.words] == result.text.split()
        assert all(0 <= w.start_ms < w.end_ms <= result.duration_ms for w in result.words)
    else:
        assert result.words is None
