from __future__ import annotations

import base64

import pytest

from emostt.errors import InvalidConfigError, ProtocolError, UnknownMessageError
from emostt.streaming.protocol import Audio, Configure, Control, parse_text
from emostt.vocabulary.session_config import SessionConfig


def test_audio_formats() -> None:
    assert parse_text('{"audio": "0001ff7f"}') == Audio(b"\x00\x01\xff\x7f")
    data = base64.b64encode(b"\x01\x02").decode()
    assert parse_text(f'{{"type": "audio", "data": "{data}"}}') == Audio(b"\x01\x02")


@pytest.mark.parametrize(
    ("text", "error", "match"),
    [
        ("{nope", ProtocolError, "JSON"),
        ("[1, 2]", ProtocolError, "objects"),
        ('{"type": "sing"}', UnknownMessageError, "unknown message type 'sing'"),
        ('{"audio": "xyz"}', ProtocolError, "hex"),
        ('{"audio": 5}', ProtocolError, "hex string"),
        ('{"type": "audio", "data": "!!"}', ProtocolError, "base64"),
    ],
)
def test_bad_messages(text: str, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        parse_text(text)


def test_controls_and_config() -> None:
    assert parse_text('{"type": "finalize"}') == Control("finalize")
    assert parse_text('{"type": "close"}') == Control("close")
    assert parse_text('{"type": "config", "language": "en"}') == Configure({"language": "en"})


def test_config_merges_nested_fields_and_validates() -> None:
    config = SessionConfig()
    updated = config.updated({"vad": {"silence_duration_ms": 200}, "gating": {"min_confidence": 0.4}})
    assert updated.vad.silence_duration_ms == 200 and updated.vad.threshold == config.vad.threshold
    assert updated.gating.min_confidence == 0.4
    with pytest.raises(InvalidConfigError, match=r"vad\.max_utterance_ms"):
        config.updated({"vad": {"max_utterance_ms": 60_000}})
    with pytest.raises(InvalidConfigError, match="language must be one of"):
        config.updated({"language": "klingon"})
    with pytest.raises(InvalidConfigError, match="sample_rate must be one of"):
        config.updated({"sample_rate": 12_345})
    with pytest.raises(InvalidConfigError, match="colour"):
        config.updated({"colour": "blue"})
    assert config.vad.silence_duration_ms == 500  # the original is untouched


def test_deeply_nested_or_non_string_type_is_a_protocol_error() -> None:
    with pytest.raises(ProtocolError, match="type must be a string"):
        parse_text('{"type":' + "[" * 999 + "]" * 999 + "}")
    with pytest.raises(ProtocolError, match="unknown message type"):
        parse_text('{"type": "' + "x" * 100_000 + '"}')
