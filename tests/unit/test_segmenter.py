"""Property tests for the endpointing state machine (``emostt.streaming.segmenter``).

The segmenter gets one Silero speech probability per 32 ms frame and says where utterances
start and end, in frame indices. These tests drive it with arbitrary probability sequences
(raw floats, or on/off patterns of speech / in-between / silence runs) and check the
invariants a streaming session relies on: well-formed alternating events, utterances that
do not overlap and fit the model's length limit, and the exact timing of starts and ends.

Tests named ``test_bug_*`` pin down the concrete inputs of defects these properties found,
as regression tests.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from emostt.streaming.segmenter import (
    TRAILING_PADDING_MS,
    EndReason,
    Segmenter,
    SegmentEvent,
    SpeechEnded,
    SpeechStarted,
)
from emostt.vocabulary import VAD_FRAME_MS
from emostt.vocabulary.session_config import EndpointConfig

# At least the loaded profile's example count, so HYPOTHESIS_PROFILE=stress searches further.
PROPERTY = settings(max_examples=max(120, settings.default.max_examples), deadline=None)
FEW = settings(max_examples=max(60, settings.default.max_examples), deadline=None)

SPEECH, MID, SILENCE = "speech", "mid", "silence"


# --------------------------------------------------------------------------- helpers


@dataclass(frozen=True)
class Emitted:
    pushed: int  # frames pushed so far when the event came out
    event: SegmentEvent


def feed(seg: Segmenter, probs: Sequence[float]) -> list[Emitted]:
    out: list[Emitted] = []
    for prob in probs:
        for event in seg.push(prob):
            out.append(Emitted(seg.frame, event))
    return out


def run(cfg: EndpointConfig, probs: Sequence[float], *, finalize: bool = False) -> list[Emitted]:
    seg = Segmenter(cfg)
    out = feed(seg, probs)
    if finalize:
        out.extend(Emitted(seg.frame, event) for event in seg.finalize())
    return out


def ended(emitted: Sequence[Emitted]) -> list[SpeechEnded]:
    return [e.event for e in emitted if isinstance(e.event, SpeechEnded)]


def frames(ms: int) -> int:
    return math.ceil(ms / VAD_FRAME_MS)


def onset_frames(cfg: EndpointConfig) -> int:
    """Frames at/above threshold needed to start an utterance (at least the triggering one)."""
    return max(frames(cfg.min_speech_ms), 1)


def silence_frames(cfg: EndpointConfig) -> int:
    return max(frames(cfg.silence_duration_ms), 1)


def trail_frames(cfg: EndpointConfig) -> int:
    return frames(min(cfg.prefix_padding_ms, TRAILING_PADDING_MS))


def level(cfg: EndpointConfig, kind: str, u: float) -> float:
    """A probability of the given kind; ``u`` in [0, 1) picks where in its band it lies."""
    hi, neg = cfg.threshold, cfg.negative_threshold
    if kind == SPEECH:  # [threshold, 1]
        return min(hi + u * (1.0 - hi), 1.0)
    if kind == MID:  # [negative_threshold, threshold)
        return min(neg + u * (hi - neg), math.nextafter(hi, 0.0))
    return min(u * neg, math.nextafter(neg, 0.0))  # [0, negative_threshold)


# --------------------------------------------------------------------------- strategies

unit = st.floats(min_value=0.0, max_value=1.0, exclude_max=True)


THRESHOLDS = st.floats(min_value=0.2, max_value=0.8)  # leaves a real in-between band
SILENCE_MS = st.integers(min_value=0, max_value=640)
PADDING_MS = st.integers(min_value=0, max_value=2_000)
MIN_SPEECH_MS = st.integers(min_value=0, max_value=2_000)
MAX_MS = st.integers(min_value=1_000, max_value=3_000)


def configs(
    *,
    threshold: st.SearchStrategy[float] = THRESHOLDS,
    silence_ms: st.SearchStrategy[int] = SILENCE_MS,
    padding_ms: st.SearchStrategy[int] = PADDING_MS,
    min_speech_ms: st.SearchStrategy[int] = MIN_SPEECH_MS,
    max_ms: st.SearchStrategy[int] = MAX_MS,
) -> st.SearchStrategy[EndpointConfig]:
    return st.builds(
        EndpointConfig,
        threshold=threshold,
        silence_duration_ms=silence_ms,
        prefix_padding_ms=padding_ms,
        min_speech_ms=min_speech_ms,
        max_utterance_ms=max_ms,
    )


# Small configs where padding + onset (<= 19 + 10 frames) stays below the shortest
# max utterance (32 frames), so exact timings are easy to state.
small_configs = configs(
    silence_ms=st.integers(min_value=64, max_value=640),
    padding_ms=st.integers(min_value=0, max_value=600),
    min_speech_ms=st.integers(min_value=0, max_value=320),
)


@st.composite
def patterns(
    draw: st.DrawFn, cfg: EndpointConfig, kinds: Sequence[str] = (SPEECH, MID, SILENCE), max_run: int = 100
) -> list[float]:
    # Run lengths either arbitrary or within a couple of frames of a length the config cares
    # about (onset, silence duration, padding, trail, max utterance), where behaviour changes.
    key = sorted(
        {
            onset_frames(cfg),
            silence_frames(cfg),
            frames(cfg.prefix_padding_ms),
            trail_frames(cfg),
            frames(cfg.max_utterance_ms),
        }
    )
    near = st.tuples(st.sampled_from(key), st.integers(min_value=-2, max_value=2)).map(
        lambda kd: max(kd[0] + kd[1], 1)
    )
    lengths = st.one_of(st.integers(min_value=1, max_value=max_run), near)
    runs = draw(st.lists(st.tuples(st.sampled_from(kinds), lengths, unit), max_size=12))
    return [level(cfg, kind, u) for kind, n, u in runs for _ in range(n)]


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[EndpointConfig, list[float]]:
    cfg = draw(configs())
    if draw(st.booleans()):
        probs = draw(st.lists(st.floats(min_value=0.0, max_value=1.0), max_size=400))
    else:
        probs = draw(patterns(cfg))
    return cfg, probs


# --------------------------------------------------------------------------- 0. predicted end


@PROPERTY
@given(scenarios())
@example((EndpointConfig(), [0.9] * 20 + [0.05] * 10 + [0.9] * 3 + [0.05] * 20))
@example((EndpointConfig(silence_duration_ms=0, prefix_padding_ms=0, min_speech_ms=0), [1.0, 0.0]))
def test_a_predicted_end_is_where_silence_ends_it(
    scenario: tuple[EndpointConfig, list[float]],
) -> None:
    cfg, probs = scenario
    seg = Segmenter(cfg)
    prediction: int | None = None
    for prob in probs:
        events = seg.push(prob)
        for event in events:
            if isinstance(event, SpeechEnded) and event.reason is EndReason.SILENCE:
                # A prediction needs one silent frame past the trail kept in the utterance,
                # so it comes before the endpoint only when the endpoint waits longer.
                if silence_frames(cfg) > max(trail_frames(cfg), 1):
                    assert prediction is not None, "the endpoint was predicted while silence ran on"
                if prediction is not None:
                    assert event.end_frame == prediction, "the predicted audio is exactly the final's"
        if events:
            prediction = None
        prediction = seg.predicted_end()
        if prediction is not None:
            assert seg.in_speech and seg.utterance_start is not None
            assert seg.utterance_start < prediction <= seg.frame


# --------------------------------------------------------------------------- 1. well-formed events


@PROPERTY
@given(scenarios())
def test_events_alternate_and_are_well_formed(scenario: tuple[EndpointConfig, list[float]]) -> None:
    cfg, probs = scenario
    seg = Segmenter(cfg)
    emitted = feed(seg, probs)
    open_start: int | None = None
    for item in emitted:
        event = item.event
        if isinstance(event, SpeechStarted):
            assert open_start is None, "SpeechStarted while an utterance is open"
            assert 0 <= event.start_frame <= item.pushed
            open_start = event.start_frame
        else:
            assert open_start is not None, "SpeechEnded without a SpeechStarted"
            assert event.start_frame == open_start
            assert 0 <= event.start_frame < event.end_frame <= item.pushed
            assert event.reason in (EndReason.SILENCE, EndReason.MAX_LENGTH)  # no finalize() here
            open_start = None
    assert seg.frame == len(probs)
    assert seg.in_speech == (open_start is not None)
    assert seg.utterance_start == open_start


@PROPERTY
@given(scenarios())
@example((EndpointConfig(), [0.9] * 20 + [0.05] * 16 + [0.9] * 5))  # test_bug_prefix_padding_overlaps_...
def test_utterances_do_not_overlap_and_are_in_order(scenario: tuple[EndpointConfig, list[float]]) -> None:
    cfg, probs = scenario
    utterances = ended(run(cfg, probs, finalize=True))
    for prev, nxt in itertools.pairwise(utterances):
        assert prev.end_frame <= nxt.start_frame, f"{nxt} overlaps {prev}"


@PROPERTY
@given(scenarios())
@example((EndpointConfig(max_utterance_ms=1_000), [0.9] * 32 + [0.05] * 16))  # see test_bug_silence_...
def test_every_utterance_contains_non_silent_audio(scenario: tuple[EndpointConfig, list[float]]) -> None:
    cfg, probs = scenario
    for utt in ended(run(cfg, probs, finalize=True)):
        assert utt.end_frame <= len(probs), f"{utt} ends after the {len(probs)} frames pushed"
        window = probs[utt.start_frame : utt.end_frame]
        assert any(p >= cfg.negative_threshold for p in window), f"{utt} is silence only"


# --------------------------------------------------------------------------- 2. max length


@PROPERTY
@given(scenarios())
@example((EndpointConfig(), [0.9] + [0.4] * 700 + [0.9] * 3))  # see test_bug_in_between_frames_...
def test_no_utterance_exceeds_max_length(scenario: tuple[EndpointConfig, list[float]]) -> None:
    cfg, probs = scenario
    limit = frames(cfg.max_utterance_ms)
    for utt in ended(run(cfg, probs, finalize=True)):
        assert utt.end_frame - utt.start_frame <= limit, f"{utt} longer than {limit} frames"


@PROPERTY
@given(
    small_configs,
    st.integers(min_value=0, max_value=40),
    st.integers(min_value=1, max_value=400),
    unit,
)
def test_continuous_speech_is_cut_into_consecutive_max_length_pieces(
    cfg: EndpointConfig, lead: int, length: int, u: float
) -> None:
    limit = frames(cfg.max_utterance_ms)
    first = max(lead - frames(cfg.prefix_padding_ms), 0)
    if (lead + length - first) % limit == 0:
        length += 1  # end with speech after a cut, so the continuation has begun
    probs = [0.0] * lead + [level(cfg, SPEECH, u)] * length
    seg = Segmenter(cfg)
    emitted = feed(seg, probs)
    if length < onset_frames(cfg):
        assert emitted == []
        return
    starts = [e.event.start_frame for e in emitted if isinstance(e.event, SpeechStarted)]
    cuts = ended(emitted)
    n_cuts = (len(probs) - first) // limit
    assert starts == [first + k * limit for k in range(n_cuts + 1)]
    assert [(c.start_frame, c.end_frame) for c in cuts] == [
        (first + k * limit, first + (k + 1) * limit) for k in range(n_cuts)
    ]
    assert all(c.reason is EndReason.MAX_LENGTH for c in cuts)
    # Each cut is reported on the very frame that reaches the limit.
    assert [e.pushed for e in emitted if isinstance(e.event, SpeechEnded)] == [c.end_frame for c in cuts]
    assert seg.in_speech
    assert seg.utterance_start == first + n_cuts * limit


# --------------------------------------------------------------------------- 3. silence ends speech


@st.composite
def speech_gap_speech(draw: st.DrawFn, gap: str) -> tuple[EndpointConfig, int, int, int, int, list[float]]:
    """Leading silence, an onset-long speech run, a silence gap, more speech.

    Lengths stay well below the 94-frame max utterance, so no MAX_LENGTH cut interferes.
    """
    cfg = draw(
        configs(
            silence_ms=st.integers(min_value=64, max_value=640),
            padding_ms=st.integers(min_value=0, max_value=600),
            min_speech_ms=st.integers(min_value=0, max_value=320),
            max_ms=st.just(3_000),
        )
    )
    silence = silence_frames(cfg)
    lead = draw(st.integers(min_value=0, max_value=20))
    speech = draw(st.integers(min_value=onset_frames(cfg), max_value=onset_frames(cfg) + 15))
    if gap == "short":
        pause = draw(st.integers(min_value=1, max_value=silence - 1))
    else:
        pause = draw(st.integers(min_value=silence, max_value=silence + 20))
    tail = draw(st.integers(min_value=1, max_value=15))
    values = draw(st.lists(unit, min_size=4, max_size=4))
    probs = (
        [level(cfg, SILENCE, values[0])] * lead
        + [level(cfg, SPEECH, values[1])] * speech
        + [level(cfg, SILENCE, values[2])] * pause
        + [level(cfg, SPEECH, values[3])] * tail
    )
    return cfg, lead, speech, pause, tail, probs


@PROPERTY
@given(speech_gap_speech("short"))
def test_silence_shorter_than_silence_duration_never_ends_utterance(
    case: tuple[EndpointConfig, int, int, int, int, list[float]],
) -> None:
    cfg, lead, _speech, _pause, _tail, probs = case
    start = max(lead - frames(cfg.prefix_padding_ms), 0)
    assert [e.event for e in run(cfg, probs, finalize=True)] == [
        SpeechStarted(start),
        SpeechEnded(start, len(probs), EndReason.FINALIZE),
    ]


@PROPERTY
@given(speech_gap_speech("long"))
def test_silence_of_silence_duration_ends_utterance_keeping_bounded_trail(
    case: tuple[EndpointConfig, int, int, int, int, list[float]],
) -> None:
    cfg, lead, speech, pause, tail, probs = case
    emitted = run(cfg, probs)
    start = max(lead - frames(cfg.prefix_padding_ms), 0)
    first_silent = lead + speech
    assert emitted[0] == Emitted(lead + onset_frames(cfg), SpeechStarted(start))
    end = emitted[1]
    assert isinstance(end.event, SpeechEnded)
    assert end.event.reason is EndReason.SILENCE
    # Reported on the frame that completes the silence run ...
    assert end.pushed == first_silent + silence_frames(cfg)
    # ... keeping at most min(prefix_padding_ms, TRAILING_PADDING_MS) of that silence.
    kept = end.event.end_frame - first_silent
    assert 0 <= kept <= trail_frames(cfg)
    assert end.event == SpeechEnded(
        start, first_silent + min(silence_frames(cfg), trail_frames(cfg)), EndReason.SILENCE
    )
    # The speech after the pause needs a full onset of its own to start the next utterance.
    resumed = first_silent + pause
    rest = emitted[2:]
    if tail < onset_frames(cfg):
        assert rest == []
    else:
        assert [e.pushed for e in rest] == [resumed + onset_frames(cfg)]
        assert isinstance(rest[0].event, SpeechStarted)
        assert resumed - frames(cfg.prefix_padding_ms) <= rest[0].event.start_frame <= resumed


def test_default_config_end_of_turn_timing() -> None:
    cfg = EndpointConfig()  # 500 ms silence = 16 frames, 300 ms padding = 10, 96 ms onset = 3
    probs = [0.0] * 30 + [0.9] * 40 + [0.0] * 16
    emitted = run(cfg, probs)
    assert emitted == [
        Emitted(33, SpeechStarted(20)),
        Emitted(86, SpeechEnded(20, 70 + 4, EndReason.SILENCE)),  # 4 frames (128 ms) of silence kept
    ]
    assert run(cfg, probs[:-1]) == emitted[:1]  # 15 silent frames are not enough


def test_zero_silence_duration_ends_on_first_silent_frame() -> None:
    cfg = EndpointConfig(silence_duration_ms=0, prefix_padding_ms=0, min_speech_ms=0)
    assert [e.event for e in run(cfg, [0.9, 0.9, 0.0])] == [
        SpeechStarted(0),
        SpeechEnded(0, 2, EndReason.SILENCE),
    ]


# --------------------------------------------------------------------------- 4. onset


@PROPERTY
@given(
    configs(
        silence_ms=st.integers(min_value=64, max_value=640),
        padding_ms=st.integers(min_value=0, max_value=600),
        min_speech_ms=st.integers(min_value=33, max_value=320),  # onset >= 2 frames
    ).flatmap(
        lambda cfg: st.tuples(
            st.just(cfg),
            st.lists(
                st.tuples(
                    st.integers(min_value=1, max_value=10),
                    st.integers(min_value=1, max_value=onset_frames(cfg) - 1),
                    unit,
                    unit,
                ),
                max_size=20,
            ),
        )
    )
)
def test_isolated_blips_shorter_than_min_speech_never_start(
    case: tuple[EndpointConfig, list[tuple[int, int, float, float]]],
) -> None:
    cfg, blips = case
    probs = [
        p
        for gap, blip, u_sil, u_sp in blips
        for p in [level(cfg, SILENCE, u_sil)] * gap + [level(cfg, SPEECH, u_sp)] * blip
    ] + [0.0]
    seg = Segmenter(cfg)
    assert feed(seg, probs) == []
    assert not seg.in_speech
    assert seg.finalize() == []


@PROPERTY
@given(
    small_configs,
    st.integers(min_value=0, max_value=60),
    st.integers(min_value=0, max_value=20),
    unit,
    unit,
)
def test_speech_of_min_speech_starts_with_prefix_padding(
    cfg: EndpointConfig, lead: int, extra: int, u_sil: float, u_sp: float
) -> None:
    onset = onset_frames(cfg)
    probs = [level(cfg, SILENCE, u_sil)] * lead + [level(cfg, SPEECH, u_sp)] * (onset + extra)
    emitted = run(cfg, probs)
    # Started exactly on the frame completing min_speech, reaching back prefix_padding (clamped at 0).
    start = max(lead - frames(cfg.prefix_padding_ms), 0)
    assert emitted[0] == Emitted(lead + onset, SpeechStarted(start))
    # One frame fewer and nothing starts.
    assert run(cfg, probs[: lead + onset - 1]) == []


def test_threshold_is_inclusive_and_negative_threshold_is_not_silence() -> None:
    cfg = EndpointConfig(threshold=0.5, silence_duration_ms=64, prefix_padding_ms=0, min_speech_ms=64)
    assert cfg.negative_threshold == pytest.approx(0.35)
    neg = cfg.negative_threshold
    # Exactly `threshold` counts as speech.
    assert [e.event for e in run(cfg, [0.0, 0.5, 0.5])] == [SpeechStarted(1)]
    # Exactly `negative_threshold` inside speech is not silence; just below it is.
    assert [e.event for e in run(cfg, [0.5, 0.5, neg, neg, neg])] == [SpeechStarted(0)]
    below = math.nextafter(neg, 0.0)
    assert [e.event for e in run(cfg, [0.5, 0.5, below, below])] == [
        SpeechStarted(0),
        SpeechEnded(0, 2, EndReason.SILENCE),  # no padding -> no trailing silence kept
    ]


# --------------------------------------------------------------------------- 5. hysteresis


@PROPERTY
@given(configs().flatmap(lambda cfg: st.tuples(st.just(cfg), patterns(cfg, kinds=(MID, SILENCE)))))
def test_probabilities_below_threshold_never_start_speech(case: tuple[EndpointConfig, list[float]]) -> None:
    cfg, probs = case
    seg = Segmenter(cfg)
    assert feed(seg, probs) == []
    assert not seg.in_speech


@PROPERTY
@given(
    small_configs.flatmap(
        lambda cfg: st.tuples(
            st.just(cfg),
            st.integers(min_value=onset_frames(cfg), max_value=onset_frames(cfg) + 10),
            st.lists(unit, min_size=1, max_size=300),
        )
    )
)
def test_in_between_probabilities_never_count_as_silence_in_speech(
    case: tuple[EndpointConfig, int, list[float]],
) -> None:
    cfg, speech, mids = case
    probs = [1.0] * speech + [level(cfg, MID, u) for u in mids]
    seg = Segmenter(cfg)
    emitted = feed(seg, probs)
    assert emitted[0].event == SpeechStarted(0)
    assert all(u.reason is EndReason.MAX_LENGTH for u in ended(emitted))
    # Still in speech, or cut on the very last frame (the next utterance opens on the next frame).
    last_end = ended(emitted)[-1].end_frame if ended(emitted) else None
    assert seg.in_speech or last_end == len(probs)
    # Within two more in-between frames the segmenter is in speech again (one of them may be a cut).
    in_speech = []
    for _ in range(2):
        feed(seg, [level(cfg, MID, 0.5)])
        in_speech.append(seg.in_speech)
    assert any(in_speech)


def test_an_onset_needs_consecutive_speech_frames() -> None:
    # Any frame below threshold breaks an onset run, so a pending start can never reach far
    # back; hysteresis applies once speech has started.
    cfg = EndpointConfig(threshold=0.5, prefix_padding_ms=0, min_speech_ms=96)
    assert run(cfg, [0.9, 0.4, 0.9]) == []
    assert run(cfg, [0.9, 0.1, 0.9]) == []
    assert [e.event for e in run(cfg, [0.4, 0.9, 0.9, 0.9])] == [SpeechStarted(1)]


# --------------------------------------------------------------------------- 6. finalize


@PROPERTY
@given(scenarios(), unit)
@example((EndpointConfig(min_speech_ms=0, prefix_padding_ms=0, max_utterance_ms=1_000), [0.9] * 32), 0.5)
def test_finalize_ends_current_utterance_at_current_frame(
    scenario: tuple[EndpointConfig, list[float]], u: float
) -> None:
    cfg, probs = scenario
    seg = Segmenter(cfg)
    feed(seg, probs)
    start = seg.utterance_start
    events = seg.finalize()
    if start is None:
        assert events == []
    else:
        assert events == [SpeechEnded(start, seg.frame, EndReason.FINALIZE)]
        assert start < seg.frame
    assert not seg.in_speech
    assert seg.finalize() == []
    # It can start again: silence then a full onset of speech opens a new utterance.
    n = onset_frames(cfg)
    after = feed(seg, [0.0] + [level(cfg, SPEECH, u)] * n)
    assert [type(e.event) for e in after] == [SpeechStarted]
    assert after[0].pushed == len(probs) + 1 + n


def test_finalize_when_idle_returns_nothing() -> None:
    seg = Segmenter(EndpointConfig())
    assert seg.finalize() == []
    feed(seg, [0.9, 0.9])  # below the 3-frame onset
    assert seg.finalize() == []
    assert seg.frame == 2


def test_finalize_mid_utterance_then_restart() -> None:
    cfg = EndpointConfig(prefix_padding_ms=0)
    seg = Segmenter(cfg)
    assert [e.event for e in feed(seg, [0.0] * 5 + [0.9] * 10)] == [SpeechStarted(5)]
    assert seg.finalize() == [SpeechEnded(5, 15, EndReason.FINALIZE)]
    assert [e.event for e in feed(seg, [0.0] * 4 + [0.9] * 3)] == [SpeechStarted(19)]
    assert seg.finalize() == [SpeechEnded(19, 22, EndReason.FINALIZE)]


# --------------------------------------------------------------------------- 7. config validation


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("threshold", 0.0),
        ("threshold", 1.0),
        ("threshold", -0.1),
        ("threshold", 1.5),
        ("threshold", math.nan),
        ("silence_duration_ms", -1),
        ("silence_duration_ms", 10_001),
        ("prefix_padding_ms", -1),
        ("prefix_padding_ms", 2_001),
        ("min_speech_ms", -1),
        ("min_speech_ms", 2_001),
        ("max_utterance_ms", 999),
        ("max_utterance_ms", 30_001),
        ("max_utterance_ms", 0),
    ],
)
def test_config_rejects_out_of_range_values(field: str, value: float) -> None:
    kwargs: dict[str, Any] = {field: value}
    with pytest.raises(ValueError, match=f"(?s){field}.*(greater|less) than"):
        EndpointConfig(**kwargs)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"threshold": 0.01},
        {"threshold": 0.99},
        {"silence_duration_ms": 0},
        {"silence_duration_ms": 10_000},
        {"prefix_padding_ms": 0},
        {"prefix_padding_ms": 2_000},
        {"min_speech_ms": 0},
        {"min_speech_ms": 2_000},
        {"max_utterance_ms": 1_000},
        {"max_utterance_ms": 30_000},
    ],
)
def test_config_accepts_range_bounds(kwargs: dict[str, Any]) -> None:
    cfg = EndpointConfig(**kwargs)
    for name, value in kwargs.items():
        assert getattr(cfg, name) == value


@FEW
@given(st.integers(min_value=0, max_value=30_000))
def test_frames_rounds_milliseconds_up(ms: int) -> None:
    n = EndpointConfig().frames(ms)
    assert n * VAD_FRAME_MS >= ms
    assert (n - 1) * VAD_FRAME_MS < ms or n == 0


# --------------------------------------------------------------------------- 8. determinism


@PROPERTY
@given(scenarios(), st.integers(min_value=0, max_value=400))
def test_same_input_gives_same_events(scenario: tuple[EndpointConfig, list[float]], split: int) -> None:
    cfg, probs = scenario
    first = run(cfg, probs, finalize=True)
    assert run(cfg, probs, finalize=True) == first
    # Reconfiguring with an equal config mid-stream changes nothing.
    seg = Segmenter(cfg)
    out = feed(seg, probs[:split])
    seg.reconfigure(cfg.model_copy())
    out += feed(seg, probs[split:])
    out += [Emitted(seg.frame, e) for e in seg.finalize()]
    assert out == first


# --------------------------------------------------------------------------- bugs found


def test_bug_prefix_padding_overlaps_previous_utterance() -> None:
    # Default config: the first utterance ends at 27 (20 speech + 7 trailing-silence frames);
    # speech resuming right after the 16-frame silence reaches back 10 padding frames to 26,
    # so frame 26 belongs to both utterances (and is transcribed twice).
    cfg = EndpointConfig()
    utterances = ended(run(cfg, [0.9] * 20 + [0.05] * 16 + [0.9] * 5, finalize=True))
    assert utterances[0].end_frame <= utterances[1].start_frame, utterances


def test_bug_prefix_padding_overlaps_finalized_utterance() -> None:
    cfg = EndpointConfig()  # 300 ms padding
    seg = Segmenter(cfg)
    feed(seg, [0.9] * 10)
    (done,) = seg.finalize()
    assert isinstance(done, SpeechEnded)
    (restarted,) = [e.event for e in feed(seg, [0.9] * 3)]
    assert restarted.start_frame >= done.end_frame, f"new utterance {restarted} overlaps {done}"


def test_bug_in_between_frames_stretch_onset_past_max_utterance() -> None:
    # One blip, 700 in-between frames (0.4: not speech, not silence), then speech: the onset
    # candidate from frame 0 survives, the utterance starts at 0 and is cut at 703 frames,
    # longer than max_utterance_ms (20 s = 625 frames); with a 30 s max and a longer bridge it
    # exceeds the model's 30 s limit.
    cfg = EndpointConfig()
    limit = cfg.frames(cfg.max_utterance_ms)
    for utt in ended(run(cfg, [0.9] + [0.4] * 700 + [0.9] * 3)):
        assert utt.end_frame - utt.start_frame <= limit, f"{utt} longer than {limit} frames"


def test_bug_onset_plus_padding_longer_than_max_utterance() -> None:
    # Valid config whose min_speech + prefix_padding (63 + 63 frames) exceeds max_utterance (32):
    # the first utterance is already 126 frames long when it starts and is cut at 127.
    cfg = EndpointConfig(min_speech_ms=2_000, prefix_padding_ms=2_000, max_utterance_ms=1_000)
    limit = cfg.frames(cfg.max_utterance_ms)
    for utt in ended(run(cfg, [0.0] * 100 + [0.9] * 70)):
        assert utt.end_frame - utt.start_frame <= limit, f"{utt} longer than {limit} frames"


def test_bug_finalize_right_after_max_length_cut_ends_past_pushed_frames() -> None:
    # 32 frames of speech hit the 1 s limit on the last push; the next utterance opens at 32
    # with no audio, and finalize() ends it at 33 although only 32 frames were pushed.
    cfg = EndpointConfig(min_speech_ms=0, prefix_padding_ms=0, max_utterance_ms=1_000)
    seg = Segmenter(cfg)
    feed(seg, [0.9] * 32)
    for event in seg.finalize():
        assert isinstance(event, SpeechEnded)
        assert event.end_frame <= seg.frame, f"{event} after {seg.frame} frames pushed"


def test_bug_silence_right_after_max_length_cut_yields_silence_only_utterance() -> None:
    # Speech stops exactly at the cut: the continuation utterance [32, 39) holds only silence
    # (the 200 ms trail), and is still handed on as an utterance to transcribe.
    cfg = EndpointConfig(max_utterance_ms=1_000)
    probs = [0.9] * 32 + [0.05] * 16
    for utt in ended(run(cfg, probs)):
        window = probs[utt.start_frame : utt.end_frame]
        assert any(p >= cfg.negative_threshold for p in window), f"{utt} is silence only"


def test_bug_negative_threshold_above_threshold_for_tiny_thresholds() -> None:
    # threshold is accepted in (0, 1), but negative_threshold is floored at 0.01: for
    # threshold=0.005 a frame at 0.008 is speech (>= threshold) that also counts as silence.
    cfg = EndpointConfig(threshold=0.005)
    assert cfg.negative_threshold <= cfg.threshold
    assert [e.event for e in run(cfg, [0.9] * 5 + [0.008] * 16)] == [SpeechStarted(0)]
