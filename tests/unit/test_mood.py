"""The mood tracker: a proper distribution always, convergence to a steady input, no flip on one
outlier, exactly one change on a sustained one, and decay over audio time."""

from __future__ import annotations

import math

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from emostt.errors import InvalidConfigError
from emostt.inference.engine import Distribution, TranscriptionResult
from emostt.streaming.mood import BASELINE, MAX_WEIGHT_S, PRIOR_WEIGHT, EmotionChange, MoodTracker
from emostt.vocabulary.labels import MOOD_LABELS
from emostt.vocabulary.session_config import MoodConfig, SessionConfig

ALL_LABELS = (*MOOD_LABELS, "unknown")
label = st.sampled_from(MOOD_LABELS)
any_scores = st.dictionaries(
    st.sampled_from((*ALL_LABELS, "not_an_emotion")),
    st.floats(-1e6, 1e6) | st.sampled_from([math.nan, math.inf, -math.inf]),
)
an_update = st.tuples(
    any_scores,
    st.floats(allow_nan=True),  # confidence
    st.floats(allow_nan=True),  # duration
    st.floats(0, 1e5),  # time step
)


def distribution(s: dict[str, float]) -> dict[str, float]:
    """Non-negative weights over MOOD_LABELS as a distribution."""
    total = sum(s.values())
    return {k: v / total for k, v in s.items()}


def clear_scores(top: str, p_top: float, rest: list[float]) -> dict[str, float]:
    """``top`` at ``p_top`` (>= 0.65), the rest shared out by ``rest``: ``top`` leads by >= 0.3."""
    others = [k for k in MOOD_LABELS if k != top]
    spread = distribution({k: w + 1e-3 for k, w in zip(others, rest, strict=True)})
    return {top: p_top, **{k: (1 - p_top) * v for k, v in spread.items()}}


rests = st.lists(st.floats(0, 1), min_size=len(MOOD_LABELS) - 1, max_size=len(MOOD_LABELS) - 1)
clear = st.builds(clear_scores, label, st.floats(0.65, 1), rests)


def one_hot(top: str) -> dict[str, float]:
    return {k: float(k == top) for k in ALL_LABELS}


def feed(tracker: MoodTracker, scores: dict[str, float], n: int, step_s: float, t: float, w: float = 1.0):
    """``n`` finals of ``scores`` every ``step_s`` after ``t``; the changes and the last time."""
    changes: list[EmotionChange] = []
    for _ in range(n):
        t += step_s
        update = tracker.update(scores, 1.0, w, t)
        if update.changed:
            changes.append(update.changed)
    return changes, t


@given(st.lists(an_update, max_size=30), st.floats(1, 3600), st.floats(0, 0.5), st.integers(1, 5))
def test_mood_is_always_a_distribution(
    updates: list, half_life: float, margin: float, min_updates: int
) -> None:
    tracker = MoodTracker(MoodConfig(half_life_s=half_life, min_margin=margin, min_updates=min_updates))
    t = 0.0
    label_now = BASELINE
    for scores, confidence, duration, step in updates:
        t += step
        update = tracker.update(scores, confidence, duration, t)
        mood = update.mood
        assert set(mood.scores) == set(MOOD_LABELS)
        assert all(0 <= p <= 1 for p in mood.scores.values())
        assert sum(mood.scores.values()) == pytest.approx(1, abs=1e-9)
        assert mood.label in MOOD_LABELS
        if update.changed:  # a change moves the label, reported from where it was
            assert (update.changed.from_label, update.changed.to_label) == (label_now, mood.label)
            assert update.changed.from_label != update.changed.to_label
        else:
            assert mood.label == label_now
        label_now = mood.label


def test_starts_neutral() -> None:
    mood = MoodTracker().mood
    assert mood.label == BASELINE == "neutral"
    assert mood.scores == {k: float(k == BASELINE) for k in MOOD_LABELS}
    assert "unknown" not in mood.scores


@given(clear, st.floats(1, MAX_WEIGHT_S), st.floats(0.01, 0.1))
def test_steady_input_converges(scores: dict[str, float], w: float, step_fraction: float) -> None:
    """A steady input: the mood tends to that input blended with the prior in the ratio of their
    weights (prior 1 against ``w / (1 - decay)``), and the label to the input's argmax."""
    config = MoodConfig(half_life_s=30)
    top = max(scores, key=scores.__getitem__)
    tracker = MoodTracker(config)
    step = step_fraction * config.half_life_s
    decay = 0.5**step_fraction
    changes, _ = feed(tracker, scores, math.ceil(25 / step_fraction), step, 0.0, w)  # 25 half-lives
    steady_evidence = w / (1 - decay)
    expected = distribution(
        {k: steady_evidence * scores[k] + (PRIOR_WEIGHT if k == BASELINE else 0) for k in MOOD_LABELS}
    )
    for k in MOOD_LABELS:
        assert tracker.mood.scores[k] == pytest.approx(expected[k], abs=1e-5)
    # Evidence worth 15 priors or more (w >= 1, decay >= 0.93): the clear argmax beats the prior.
    assert tracker.mood.label == top
    assert len(changes) == (top != BASELINE)


@given(clear, label, st.integers(0, 12), st.floats(0.5, MAX_WEIGHT_S), st.floats(0.01, 2.0))
def test_one_outlier_does_not_flip_the_label(
    scores: dict[str, float], outlier: str, extra: int, w: float, step_fraction: float
) -> None:
    """A clear steady emotion until the mood has taken it (and ``extra`` finals more), one final
    scored entirely as another emotion (same weight, same pace), then the steady emotion again:
    the label never leaves the steady one."""
    steady = max(scores, key=scores.__getitem__)
    assume(outlier != steady)
    config = MoodConfig()
    step = step_fraction * config.half_life_s
    # Steady evidence worth 7 priors at least: enough for the mood to take the steady emotion.
    assume(w / (1 - 0.5**step_fraction) >= 7)
    tracker = MoodTracker(config)
    changes, t = feed(tracker, scores, 1, step, 0.0, w)
    while tracker.mood.label != steady:
        more, t = feed(tracker, scores, 1, step, t, w)
        changes += more
        assert len(changes) <= 1 and t < 1000 * step
    _, t = feed(tracker, scores, extra, step, t, w)
    assert len(changes) == (steady != BASELINE)
    t += step
    assert tracker.update(one_hot(outlier), 1.0, w, t).changed is None
    assert tracker.mood.label == steady
    changes, _ = feed(tracker, scores, 10, step, t, w)
    assert changes == []
    assert tracker.mood.label == steady


def test_one_outlier_after_a_single_utterance_does_not_flip_either() -> None:
    tracker = MoodTracker()
    assert tracker.update(one_hot("angry"), 1.0, 2.0, 1.0).changed is None  # at the very start
    assert tracker.update(one_hot("neutral"), 1.0, 2.0, 3.0).changed is None
    assert tracker.mood.label == "neutral"


@given(label, label, st.integers(4, 10), st.floats(1, MAX_WEIGHT_S), st.floats(0.02, 1.0))
def test_a_sustained_change_flips_exactly_once(
    first: str, second: str, before: int, w: float, step_fraction: float
) -> None:
    assume(first != second)
    config = MoodConfig(half_life_s=10)
    tracker = MoodTracker(config)
    step = step_fraction * config.half_life_s
    changes, t = feed(tracker, one_hot(first), before, step, 0.0, w)
    assert [(c.from_label, c.to_label) for c in changes] == ([] if first == BASELINE else [(BASELINE, first)])
    changes, _ = feed(tracker, one_hot(second), 100, step, t, w)
    assert [(c.from_label, c.to_label) for c in changes] == [(first, second)]
    assert changes[0].scores[second] - changes[0].scores[first] >= config.min_margin


def test_two_or_three_consistent_utterances_change_a_conversation_mood() -> None:
    """Defaults, at a conversation's pace (a 2 s utterance every 10 s of audio): after a long
    steady run, the third utterance of a new emotion changes the mood; one or two do not."""
    tracker = MoodTracker()
    _, t = feed(tracker, one_hot("sad"), 20, 10.0, 0.0, 2.0)
    assert tracker.mood.label == "sad"
    flips = [tracker.update(one_hot("happy"), 1.0, 2.0, t + 10 * k).changed for k in (1, 2, 3)]
    assert flips[:2] == [None, None]
    assert flips[2] is not None and (flips[2].from_label, flips[2].to_label) == ("sad", "happy")


@given(label, st.floats(20, 100))
def test_after_a_long_gap_new_evidence_dominates(new: str, half_lives: float) -> None:
    config = MoodConfig()
    tracker = MoodTracker(config)
    old = "angry" if new != "angry" else "sad"
    _, t = feed(tracker, one_hot(old), 50, 2.0, 0.0, MAX_WEIGHT_S)
    assert tracker.mood.scores[old] > 0.9
    t += half_lives * config.half_life_s
    update = tracker.update(one_hot(new), 1.0, 2.0, t)
    # The old evidence is all but gone: only the prior and the new final are left.
    assert update.mood.scores[old] < 1e-3
    assert max(update.mood.scores, key=update.mood.scores.__getitem__) == new
    assert update.mood.scores[new] == pytest.approx(2 / 3 if new != BASELINE else 1.0, abs=1e-3)
    assert update.changed is None and update.mood.label == old  # one final alone never flips
    second = tracker.update(one_hot(new), 1.0, 2.0, t + 1)
    assert second.mood.label == new and (second.changed is not None) == (new != old)


def test_weights_confidence_duration_and_unknown() -> None:
    def first_mood(scores: dict[str, float], confidence: float, duration: float) -> float:
        return MoodTracker().update(scores, confidence, duration, 1.0).mood.scores["sad"]

    # Evidence = confidence x min(duration, 5 s), against a prior of 1: sad = w / (1 + w).
    assert first_mood(one_hot("sad"), 1.0, 1.0) == pytest.approx(0.5)
    assert first_mood(one_hot("sad"), 0.5, 2.0) == pytest.approx(0.5)
    assert first_mood(one_hot("sad"), 1.0, 60.0) == pytest.approx(5 / 6)  # capped at 5 s
    assert first_mood(one_hot("sad"), 1.0, 0.1) == pytest.approx(0.1 / 1.1)  # an "uh" barely counts
    # unknown is no mood: its share of a final's weight is left out.
    assert first_mood({"sad": 0.1, "unknown": 0.9}, 1.0, 1.0) == pytest.approx(0.1 / 1.1)
    assert first_mood(one_hot("unknown"), 1.0, 5.0) == 0.0


def test_time_decay_is_a_half_life_on_the_audio_clock() -> None:
    tracker = MoodTracker(MoodConfig(half_life_s=10))
    tracker.update(one_hot("sad"), 1.0, 4.0, 0.0)  # sad evidence 4
    mood = tracker.update(one_hot("happy"), 1.0, 2.0, 10.0).mood  # sad 4 -> 2, happy 2, prior 1
    assert mood.scores["sad"] == pytest.approx(2 / 5) and mood.scores["happy"] == pytest.approx(2 / 5)
    # A final stamped earlier than the last (it cannot happen in a session) does not undecay.
    mood = tracker.update(one_hot("happy"), 1.0, 1.0, 5.0).mood
    assert mood.scores["sad"] == pytest.approx(2 / 6)


def test_finals_without_evidence_count_for_nothing() -> None:
    """An all-unknown or zero-weight final neither moves the mood nor confirms a change: the
    moods are exactly those of a session without it, decay included."""
    tracker, reference = MoodTracker(), MoodTracker()
    for tr in (tracker, reference):
        _, t = feed(tr, one_hot("sad"), 2, 2.0, 0.0, 2.0)
        assert tr.update(one_hot("angry"), 1.0, 5.0, t + 2).changed is None
    leading = tracker.mood
    assert leading.label == "sad" and max(leading.scores, key=leading.scores.__getitem__) == "angry"
    nothing = (
        (one_hot("unknown"), 1.0, 2.0),
        (one_hot("angry"), 0.0, 2.0),
        (one_hot("angry"), 1.0, 0.0),
        ({}, 1, 1),
    )
    for scores, confidence, duration in nothing:
        update = tracker.update(scores, confidence, duration, t + 4)
        assert update.changed is None and update.mood == leading
    update = tracker.update(one_hot("sad"), 1.0, 2.0, t + 17)
    assert update == reference.update(one_hot("sad"), 1.0, 2.0, t + 17)
    assert update.changed is None and update.mood.label == "sad"


def test_reconfigure_keeps_the_mood_and_disabling_forgets_it() -> None:
    tracker = MoodTracker()
    feed(tracker, one_hot("sad"), 3, 1.0, 0.0)
    tracker.reconfigure(MoodConfig(half_life_s=5))
    assert tracker.mood.label == "sad" and tracker.config.half_life_s == 5
    tracker.reconfigure(MoodConfig(enabled=False))
    assert tracker.mood.label == BASELINE and tracker.mood.scores[BASELINE] == 1.0


def test_observe_skips_gated_finals() -> None:
    def result(emotion: str, duration_ms: int = 1500) -> TranscriptionResult:
        dist = Distribution(emotion, one_hot(emotion))
        return TranscriptionResult("hi", Distribution("en", {"en": 1.0}), dist, dist, 0.9, duration_ms)

    tracker = MoodTracker()
    tracker.observe(result("sad"), gated=False, audio_end_ms=2000)
    before = tracker.mood
    assert tracker.observe(result("angry"), gated=True, audio_end_ms=4000).mood == before
    assert before.scores["sad"] == pytest.approx(0.9 * 1.5 / (1 + 0.9 * 1.5))
    assert tracker.observe(result("sad"), gated=False, audio_end_ms=3000).mood.label == "sad"


def test_session_config_merges_and_checks_mood() -> None:
    config = SessionConfig()
    assert config.mood == MoodConfig() and config.mood.half_life_s == 15 and config.mood.enabled
    updated = config.updated({"mood": {"half_life_s": 5}})
    assert updated.mood.half_life_s == 5 and updated.mood.enabled
    assert updated.updated({"mood": {"enabled": False}}).mood.half_life_s == 5
    for bad, field in (
        ({"half_life_s": 0.5}, "mood.half_life_s"),
        ({"half_life_s": "soon"}, "mood.half_life_s"),
        ({"min_margin": 0.9}, "mood.min_margin"),
        ({"min_updates": 0}, "mood.min_updates"),
        ({"enabled": "maybe"}, "mood.enabled"),
        ({"colour": "blue"}, "mood.colour"),
    ):
        with pytest.raises(InvalidConfigError, match=field.replace(".", r"\.")):
            config.updated({"mood": bad})
