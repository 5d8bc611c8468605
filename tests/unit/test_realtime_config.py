"""OpenAI Realtime session updates (GA and beta, as LiveKit, Pipecat and the SDK send them) to our config."""

from __future__ import annotations

from typing import Any

import pytest

from emostt.transport.realtime_config import RealtimeRequestError, RealtimeView, parse_update, render
from emostt.vocabulary.session_config import SessionConfig

CONFIG = SessionConfig(sample_rate=24_000)
VIEW = RealtimeView(id="sess_1", beta=False, transcription={"model": "demo", "language": None, "prompt": ""})


def ga(audio_input: dict[str, Any]) -> dict[str, Any]:
    return {"type": "session.update", "session": {"type": "transcription", "audio": {"input": audio_input}}}


def test_livekit_session_update() -> None:
    # livekit-plugins-openai 1.8.9 STT(use_realtime=True): its defaults, dumped with exclude_unset.
    update = parse_update(
        ga(
            {
                "format": {"rate": 24000, "type": "audio/pcm"},
                "transcription": {"model": "gpt-4o-mini-transcribe", "language": "en"},
                "turn_detection": {
                    "type": "server_vad",
                    "threshold": 0.5,
                    "prefix_padding_ms": 600,
                    "silence_duration_ms": 350,
                },
            }
        ),
        VIEW,
        CONFIG,
        "auto",
    )
    assert update.changes == {
        "sample_rate": 24000,
        "encoding": "pcm16",
        "language": "en",
        "vad": {"threshold": 0.5, "prefix_padding_ms": 600, "silence_duration_ms": 350},
        "turn_detection": {"type": "silence"},
    }
    assert not update.manual_turns
    applied = CONFIG.updated(update.changes).model_dump()
    turn = render(update.view, applied)["audio"]["input"]["turn_detection"]
    assert turn == {
        "type": "server_vad",
        "threshold": 0.5,
        "prefix_padding_ms": 600,
        "silence_duration_ms": 350,
    }


def test_pipecat_session_update_means_manual_turns() -> None:
    # pipecat-ai 1.14 OpenAIRealtimeSTTService defaults: local VAD, turn_detection null.
    update = parse_update(
        ga(
            {
                "format": {"type": "audio/pcm", "rate": 24000},
                "transcription": {"model": "gpt-realtime-whisper", "language": "en"},
                "turn_detection": None,
                "noise_reduction": {"type": "near_field"},
            }
        ),
        VIEW,
        CONFIG,
        "auto",
    )
    assert update.manual_turns
    session = render(update.view, CONFIG.model_dump())
    assert session["audio"]["input"]["turn_detection"] is None
    assert session["audio"]["input"]["noise_reduction"] == {"type": "near_field"}
    assert session["audio"]["input"]["transcription"]["model"] == "gpt-realtime-whisper"


def test_models_without_server_vad_default_to_manual_turns() -> None:
    # LiveKit leaves turn_detection out for these models and commits each turn itself.
    update = parse_update(ga({"transcription": {"model": "gpt-realtime-whisper"}}), VIEW, CONFIG, "auto")
    assert update.manual_turns
    explicit = parse_update(ga({"turn_detection": {"type": "server_vad"}}), VIEW, CONFIG, "auto")
    again = parse_update(
        ga({"transcription": {"model": "gpt-live-transcribe"}}), explicit.view, CONFIG, "auto"
    )
    assert not again.manual_turns  # the client chose server VAD itself


def test_beta_transcription_session_update() -> None:
    update = parse_update(
        {
            "type": "transcription_session.update",
            "session": {
                "input_audio_format": "pcm16",
                "input_audio_transcription": {
                    "model": "gpt-4o-transcribe",
                    "language": "zh-CN",
                    "prompt": "x",
                },
                "turn_detection": {"type": "server_vad", "silence_duration_ms": 700},
                "input_audio_noise_reduction": None,
                "include": ["item.input_audio_transcription.logprobs"],
            },
        },
        VIEW,
        CONFIG,
        "auto",
    )
    assert update.changes == {
        "sample_rate": 24000,
        "encoding": "pcm16",
        "language": "zh",
        "keyterms": ("x",),
        "vad": {"silence_duration_ms": 700},
        "turn_detection": {"type": "silence"},
    }
    session = render(update.view, CONFIG.updated(update.changes).model_dump())
    assert session["input_audio_transcription"]["prompt"] == "x"
    assert session["turn_detection"]["silence_duration_ms"] == 700
    assert session["include"] == ["item.input_audio_transcription.logprobs"]


def test_only_present_fields_change_and_unknown_ones_are_ignored() -> None:
    update = parse_update(ga({"transcription": {"delay": "low", "keywords": ["robot"]}}), VIEW, CONFIG, "en")
    assert update.changes == {"language": "en"}  # the server's default language, no hint given
    assert update.view.transcription["model"] == "demo" and update.view.transcription["delay"] == "low"
    semantic = parse_update(
        ga({"turn_detection": {"type": "semantic_vad", "eagerness": "high"}}), VIEW, CONFIG, "auto"
    )
    assert semantic.changes == {"vad": {}, "turn_detection": {"type": "semantic", "eagerness": "high"}}
    assert not semantic.manual_turns
    assert (
        render(semantic.view, CONFIG.model_dump())["audio"]["input"]["turn_detection"]["eagerness"] == "high"
    )


def test_other_rates_are_resampled_like_ws_stt() -> None:
    update = parse_update(ga({"format": {"type": "audio/pcm", "rate": 48000}}), VIEW, CONFIG, "auto")
    assert update.changes == {"sample_rate": 48000, "encoding": "pcm16"}


@pytest.mark.parametrize(
    ("event", "param"),
    [
        (ga({"format": {"type": "audio/opus"}}), "session.audio.input.format.type"),
        (ga({"format": {"type": "audio/pcm", "rate": 11025}}), "session.audio.input.format.rate"),
        (
            ga({"turn_detection": {"type": "server_vad", "threshold": 1.5}}),
            "session.audio.input.turn_detection.threshold",
        ),
        (ga({"turn_detection": {"type": "magic"}}), "session.audio.input.turn_detection.type"),
        (ga({"transcription": "whisper-1"}), "session.audio.input.transcription"),
        (ga({"transcription": {"language": 7}}), "session.audio.input.transcription.language"),
        ({"type": "session.update", "session": {"type": "realtime"}}, "session.type"),
        ({"type": "session.update", "session": []}, "session"),
        (
            {"type": "transcription_session.update", "session": {"input_audio_format": "g729"}},
            "session.input_audio_format",
        ),
    ],
)
def test_bad_updates_name_the_field(event: dict[str, Any], param: str) -> None:
    with pytest.raises(RealtimeRequestError) as raised:
        parse_update(event, VIEW, CONFIG, "auto")
    assert raised.value.param == param


LONG = "x" * 300_000  # a client's 300 KB string, never stored or echoed


@pytest.mark.parametrize(
    ("event", "param"),
    [
        (ga({"transcription": {"model": LONG}}), "session.audio.input.transcription.model"),
        (ga({"transcription": {"prompt": LONG}}), "session.audio.input.transcription.prompt"),
        (ga({"transcription": {"language": LONG}}), "session.audio.input.transcription.language"),
        (ga({"transcription": {"languages": [LONG]}}), "session.audio.input.transcription.languages"),
        (ga({"transcription": {"delay": LONG}}), "session.audio.input.transcription.delay"),
        (
            ga({"turn_detection": {"type": "semantic_vad", "eagerness": LONG}}),
            "session.audio.input.turn_detection.eagerness",
        ),
        (ga({"noise_reduction": {"type": LONG}}), "session.audio.input.noise_reduction.type"),
        ({"type": "session.update", "session": {"include": [LONG]}}, "session.include"),
        ({"type": "session.update", "session": {"include": ["a"] * 17}}, "session.include"),
        (
            {
                "type": "transcription_session.update",
                "session": {"input_audio_transcription": {"prompt": LONG}},
            },
            "session.input_audio_transcription.prompt",
        ),
    ],
)
def test_every_string_a_client_sets_is_bounded_and_the_refusal_names_it(
    event: dict[str, Any], param: str
) -> None:
    with pytest.raises(RealtimeRequestError) as raised:
        parse_update(event, VIEW, CONFIG, "auto")
    assert raised.value.param == param
    assert LONG not in str(raised.value), "the refusal does not echo the value"


def test_strings_within_their_bounds_are_kept_and_echoed() -> None:
    prompt = "Ada Lovelace, Babbage " * 100  # 2,200 characters
    update = parse_update(ga({"transcription": {"model": "m" * 256, "prompt": prompt}}), VIEW, CONFIG, "auto")
    assert update.view.transcription["model"] == "m" * 256 and update.view.transcription["prompt"] == prompt


def test_openai_g711_formats_are_8_khz_mulaw_and_alaw() -> None:
    for kind, encoding in (("audio/pcmu", "mulaw"), ("audio/pcma", "alaw")):
        update = parse_update(ga({"format": {"type": kind}}), VIEW, CONFIG, "auto")
        assert update.changes == {"sample_rate": 8000, "encoding": encoding}
        applied = CONFIG.updated(update.changes).model_dump()
        assert render(update.view, applied)["audio"]["input"]["format"] == {"type": kind}
    for name, encoding in (("g711_ulaw", "mulaw"), ("g711_alaw", "alaw")):
        event = {"type": "transcription_session.update", "session": {"input_audio_format": name}}
        update = parse_update(event, VIEW, CONFIG, "auto")
        assert update.changes == {"sample_rate": 8000, "encoding": encoding}
        applied = CONFIG.updated(update.changes).model_dump()
        assert render(update.view, applied)["input_audio_format"] == name
