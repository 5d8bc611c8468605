"""The form fields of POST /v1/audio/transcriptions, and the settings that bound the endpoint."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from emostt.config import Settings
from emostt.transport.openai_errors import (
    OpenAIError,
    field_too_long,
    too_many_uploads,
    upload_timeout,
    upload_too_slow,
)
from emostt.transport.openai_params import TranscriptionParams, language_hint, parse_params


def parse(**fields: str | list[str]) -> TranscriptionParams:
    return parse_params({k: v if isinstance(v, list) else [v] for k, v in fields.items()}, "auto")


@pytest.mark.parametrize(
    ("value", "hint"),
    [
        ("en", "en"),
        ("en-US", "en"),
        ("EN_gb", "en"),
        ("zh", "zh"),
        ("zh-CN", "zh"),
        ("cmn", "zh"),
        ("yue", "yue"),
        ("ja", "ja"),
        ("ko", "ko"),
        ("fr", "auto"),
        ("", "auto"),
        ("english", "en"),
    ],
)
def test_language_codes_map_to_sensevoice_hints(value: str, hint: str) -> None:
    assert language_hint(value, "auto") == hint


def test_defaults_and_any_model_name() -> None:
    params = parse(model="whisper-1")
    assert (params.model, params.language, params.response_format, params.granularities, params.stream) == (
        "whisper-1",
        "auto",
        "json",
        ("segment",),
        False,
    )
    params = parse(model="gpt-4o-transcribe", **{"timestamp_granularities[]": ["word", "segment", "word"]})
    assert params.granularities == ("word", "segment")
    assert parse(model="m", stream="true", response_format="text").metric_format == "sse"


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({}, "model"),
        ({"model": " "}, "model"),
        ({"model": "m", "response_format": "xml"}, "response_format"),
        ({"model": "m", "timestamp_granularities[]": "char"}, "timestamp_granularities"),
        ({"model": "m", "stream": "maybe"}, "stream"),
        ({"model": "m", "stream": "true", "response_format": "srt"}, "response_format"),
    ],
)
def test_invalid_fields_are_400_naming_the_parameter(fields: dict[str, str], param: str) -> None:
    with pytest.raises(OpenAIError) as caught:
        parse(**fields)
    assert caught.value.status == 400 and caught.value.param == param
    assert set(caught.value.body()["error"]) == {"message", "type", "param", "code"}


def test_file_limits_are_validated() -> None:
    with pytest.raises(ValidationError, match="max_file_bytes"):
        Settings(max_file_bytes=10)
    with pytest.raises(ValidationError, match="file_segment_window"):
        Settings(max_waiting=16, max_file_requests=4, file_segment_window=4)
    assert Settings(max_waiting=32, max_file_requests=4, file_segment_window=4).file_segment_window == 4


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("max_file_uploads", 0),
        ("file_upload_timeout_s", 0),
        ("file_upload_min_bytes_per_s", -1),
        ("file_upload_rate_window_s", 0),
    ],
)
def test_upload_limits_are_validated(name: str, value: float) -> None:
    with pytest.raises(ValidationError, match=name):
        Settings.model_validate({name: value})


def test_upload_refusals_name_their_field_and_close_the_connection() -> None:
    error = field_too_long("model", 256)
    assert (error.status, error.param, error.code) == (400, "model", "string_above_max_length")
    assert "256" in error.message
    assert field_too_long("x" * 10_000, 1024).param == "x" * 64 + "..."  # never the whole name back
    slow, late = upload_too_slow(16384, 10), upload_timeout(300)
    assert (slow.status, slow.code, slow.param) == (408, "upload_too_slow", "file")
    assert (late.status, late.code, late.param) == (408, "upload_timeout", "file")
    busy = too_many_uploads(64).response(close=True)
    assert busy.status_code == 429 and busy.headers["retry-after"] == "1"
    assert busy.headers["connection"] == "close"
    assert "connection" not in too_many_uploads(64).response().headers
