"""The SDK's pure parts: event parsing (forward compatible), backoff, close-code rules, audio."""

from __future__ import annotations

import json
import random
import wave
from pathlib import Path

import emostt_client as ec
import numpy as np
import pytest
from emostt_client import protocol
from emostt_client.cli import as_json, describe
from emostt_client.reconnect import is_retryable_close

BASE = {"session_id": "s1", "seq": 7}
SCORES = {"happy": 0.7, "neutral": 0.3}


def final(**extra: object) -> dict[str, object]:
    return {
        **BASE,
        "type": "final",
        "utterance_id": "u2",
        "text": "turn left",
        "confidence": 0.9,
        "language": {"label": "en", "scores": {"en": 1.0}},
        "emotion": {"label": "happy", "scores": SCORES},
        "event": {"label": "speech", "scores": {"speech": 1.0}},
        "gated": False,
        "gate_reasons": [],
        "degraded": False,
        "end_reason": "silence",
        "duration_ms": 900,
        "audio_start_ms": 320,
        "audio_end_ms": 1220,
        "latency_ms": 0.4,
        **extra,
    }


def test_final_with_mood_words_and_new_fields() -> None:
    words = [{"word": "turn", "start_ms": 0, "end_ms": 200, "confidence": 0.8}]
    event = ec.parse_event(final(mood={"label": "happy", "scores": SCORES}, words=words, brand_new=1))
    assert isinstance(event, ec.Final)
    assert event.text == "turn left" and event.utterance_id == "u2"
    assert event.emotion == ec.Label("happy", SCORES) and event.emotion.score == 0.7
    assert event.mood == ec.Label("happy", SCORES)
    assert event.words == (ec.Word("turn", 0, 200, 0.8),)
    assert event.timings == ec.Timings(320, 1220, 900, 0.4)
    assert (event.session_id, event.seq, event.end_reason) == ("s1", 7, "silence")
    assert event.raw["brand_new"] == 1
    plain = ec.parse_event(final())
    assert isinstance(plain, ec.Final) and plain.mood is None and plain.words is None


def test_every_event_type() -> None:
    parsed = [
        ec.parse_event({**BASE, **e})
        for e in (
            {
                "type": "ready",
                "device_id": "d",
                "model": {"name": "demo", "revision": "1"},
                "sample_rate": 16000,
            },
            {"type": "config", "config": {"use_itn": False}},
            {"type": "speech_started", "utterance_id": "u1", "audio_start_ms": 96},
            {
                "type": "partial",
                "utterance_id": "u1",
                "text": "tu",
                "audio_start_ms": 96,
                "audio_end_ms": 400,
            },
            {
                "type": "emotion_changed",
                "from": "neutral",
                "to": "happy",
                "utterance_id": "u3",
                "scores": SCORES,
            },
            {
                "type": "error",
                "code": "overloaded",
                "message": "later",
                "retryable": True,
                "utterance_id": "u4",
            },
        )
    ]
    ready, config, started, partial, changed, error = parsed
    assert isinstance(ready, ec.Ready) and ready.model_name == "demo" and ready.sample_rate == 16000
    assert isinstance(config, ec.ConfigUpdated) and config.config == {"use_itn": False}
    assert isinstance(started, ec.SpeechStarted) and started.audio_start_ms == 96
    assert isinstance(partial, ec.Partial) and partial.text == "tu"
    assert changed == ec.EmotionChanged("neutral", "happy", "u3", SCORES, "s1", 7, {})
    assert isinstance(error, ec.Error) and error.retryable and error.utterance_id == "u4"


def test_turn_events_and_the_finals_turn_confidence() -> None:
    eager = ec.parse_event(
        {**BASE, "type": "eager_end_of_turn", "utterance_id": "u1", "text": "turn left", "confidence": 0.42}
    )
    assert eager == ec.EagerEndOfTurn("u1", "turn left", 0.42, "s1", 7, {})
    assert ec.parse_event({**BASE, "type": "turn_resumed", "utterance_id": "u1"}) == ec.TurnResumed(
        "u1", "s1", 7, {}
    )
    ended = ec.parse_event(final(end_of_turn_confidence=0.93, end_reason="turn_model"))
    assert isinstance(ended, ec.Final) and ended.end_of_turn_confidence == 0.93
    assert ended.end_reason == "turn_model"
    for older in (final(), final(end_of_turn_confidence=None)):  # an older server; no model run
        parsed = ec.parse_event(older)
        assert isinstance(parsed, ec.Final) and parsed.end_of_turn_confidence is None
    # Without its confidence, an eager end of turn no longer parses: Unknown, never an exception.
    assert isinstance(ec.parse_event({**BASE, "type": "eager_end_of_turn", "utterance_id": "u1"}), ec.Unknown)
    assert describe(eager) == "[eager end of turn u1 0.42] 'turn left'"
    assert (
        describe(ec.parse_event({**BASE, "type": "turn_resumed", "utterance_id": "u1"}))
        == "[turn resumed u1]"
    )
    assert describe(ended).endswith("latency=0.4 ms\n[turn end 0.93]")


def test_turn_detection_values() -> None:
    assert ec.TurnDetection().to_config() == {"type": "semantic"}
    high = ec.TurnDetection("semantic", eagerness="high", eager_threshold=0.25, max_silence_ms=3000)
    assert high.to_config() == {
        "type": "semantic",
        "eagerness": "high",
        "eager_threshold": 0.25,
        "max_silence_ms": 3000,
    }
    assert ec.TurnDetection("silence").to_config() == {"type": "silence"}
    assert protocol.config_fields({"language": "en", "turn_detection": high}) == {
        "language": "en",
        "turn_detection": high.to_config(),
    }
    assert protocol.is_semantic({"type": "semantic"}) and not protocol.is_semantic(None)
    assert not protocol.is_semantic({"eagerness": "low"})  # the type defaults to silence
    for bad in ({"type": "vad"}, {"type": "semantic", "eagerness": "eager"}, ["semantic"]):
        with pytest.raises(ValueError, match="turn_detection"):
            protocol.turn_detection_config(bad)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "message",
    [
        {**BASE, "type": "speaker_changed", "speaker": 2},  # a type this SDK does not know
        {**BASE, "type": "final", "text": "no scores"},  # a known type that no longer parses
        {
            **BASE,
            "type": "partial",
            "utterance_id": "u1",
            "text": "x",
            "audio_start_ms": "soon",
            "audio_end_ms": 1,
        },
        {"no": "type"},
        {"type": 5},
    ],
)
def test_what_this_version_cannot_read_is_unknown(message: dict[str, object]) -> None:
    event = ec.parse_event(message)
    assert isinstance(event, ec.Unknown) and event.raw == message
    assert describe(event).startswith("[")  # the CLI prints it too


def test_parse_message_takes_text_and_bytes() -> None:
    assert isinstance(ec.parse_message(json.dumps(final()).encode()), ec.Final)
    assert ec.parse_message("not json") == ec.Unknown("", {"text": "not json"})
    assert ec.parse_message(b"\xff\xfe") == ec.Unknown("", {"text": "\ufffd\ufffd"})
    assert isinstance(ec.parse_message("[1, 2]"), ec.Unknown)


def test_cli_lines_keep_the_old_format() -> None:
    event = ec.parse_event(final())
    assert describe(event) == (
        "[final u2] 'turn left'  emotion=happy language=en event=speech"
        " confidence=0.90 gated=False latency=0.4 ms"
    )
    assert json.loads(as_json(event)) == final()
    with_mood = ec.parse_event(final(mood={"label": "happy", "scores": SCORES}))
    assert "emotion=happy mood=happy language=en" in describe(with_mood)
    assert describe(ec.Reconnected(2, 1012, ("u3",))) == "[reconnected after close 1012, attempt 2; lost u3]"
    assert json.loads(as_json(ec.Reconnected(1, 1006, ())))["type"] == "reconnected"


def test_backoff_grows_to_the_cap_with_jitter() -> None:
    policy = ec.ReconnectPolicy(initial_delay=0.5, max_delay=4.0, multiplier=2.0, jitter=0.5)
    rng = random.Random(0)
    for attempt, base in [(1, 0.5), (2, 1.0), (3, 2.0), (4, 4.0), (9, 4.0), (10_000, 4.0)]:
        delays = [policy.delay(attempt, rng) for _ in range(200)]
        assert all(base * 0.5 <= d <= base for d in delays)
        assert max(delays) - min(delays) > base * 0.3  # jittered
    assert ec.ReconnectPolicy(jitter=0).delay(1) == 0.5
    with pytest.raises(ValueError):
        ec.ReconnectPolicy(max_attempts=-1)


RETRIED = {1001, 1006, 1011, 1012, 1013}


@pytest.mark.parametrize("code", [1000, 1001, 1003, 1006, 1007, 1008, 1009, 1011, 1012, 1013, 4000, 4404])
def test_which_close_codes_are_retried(code: int) -> None:
    assert is_retryable_close(code) is (code in RETRIED)


def test_pcm16_from_arrays_and_bytes() -> None:
    assert ec.to_pcm16(b"\x01\x02\x03") == b"\x01\x02\x03"
    floats = np.array([0.0, 0.5, -1.0, 2.0], dtype=np.float32)
    assert np.frombuffer(ec.to_pcm16(floats), "<i2").tolist() == [0, 16384, -32768, 32767]
    ints = np.array([1, -2, 300], dtype=np.int16)
    assert ec.to_pcm16(ints) == ints.astype("<i2").tobytes()
    stereo = np.array([[0.5, -0.5], [0.25, 0.25]], dtype=np.float64)
    assert np.frombuffer(ec.to_pcm16(stereo), "<i2").tolist() == [0, 8192]
    with pytest.raises(TypeError):
        ec.to_pcm16(np.array([1, 2], dtype=np.int32))


@pytest.mark.parametrize("width", [1, 2, 3, 4])
def test_pcm_wav_files_are_read_without_soundfile(tmp_path: Path, width: int) -> None:
    samples = np.array([0.0, 0.5, -0.5, 0.25, -0.25, 0.0])
    scale = 2 ** (8 * width - 1)
    ints = np.round(samples * scale).astype(np.int64)
    if width == 1:
        raw = (ints + 128).astype(np.uint8).tobytes()
    else:
        raw = b"".join(int(v).to_bytes(width, "little", signed=True) for v in np.repeat(ints, 2))
    path = tmp_path / "a.wav"
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(1 if width == 1 else 2)
        wav.setsampwidth(width)
        wav.setframerate(22050)
        wav.writeframes(raw)
    audio, rate = ec.read_audio(path)
    assert rate == 22050 and audio.dtype == np.float32
    assert np.allclose(audio, samples, atol=1 / 128)


def test_build_url() -> None:
    assert ec.build_url("ws://h:8000", "robot-1", 16000) == "ws://h:8000/ws/stt/robot-1?sample_rate=16000"
    assert ec.build_url("https://h/emostt/", "r:1", 48000) == "wss://h/emostt/ws/stt/r%3A1?sample_rate=48000"
    assert ec.build_url("ws://h/ws/stt?x=1", "d", 8000) == "ws://h/ws/stt/d?x=1&sample_rate=8000"
    with pytest.raises(ValueError, match="device_id"):
        ec.build_url("ws://h", "-bad", 16000)
