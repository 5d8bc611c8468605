"""The form fields of ``POST /v1/audio/transcriptions`` to typed parameters. Pure.

``model`` is required (as OpenAI requires it) and any value is accepted: OpenAI clients and
frameworks hard-code names like ``whisper-1`` or ``gpt-4o-transcribe``, and this server serves
one model whatever they ask for (``GET /v1/models`` names it). ``keyterms`` (repeatable) bias
decoding towards those words; without it, ``prompt`` is read as a list of keyterms
(``keyterms_from_prompt``). ``temperature``, ``include[]`` and ``chunking_strategy`` are
accepted and ignored. Every field's size is bounded while the body is read, before it gets here
(``FIELD_BYTES`` in transport/openai_upload.py).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, cast, get_args

from emostt.transport.openai_errors import invalid_request
from emostt.vocabulary.session_config import MAX_KEYTERM_CHARS, MAX_KEYTERMS, keyterms_from_prompt

ResponseFormat = Literal["json", "text", "srt", "vtt", "verbose_json"]
Granularity = Literal["word", "segment"]
STREAM_FORMATS = ("json", "text")

# ISO 639 codes (and a few names) to SenseVoice's language hints; anything else: auto-detect.
LANGUAGE_HINTS = {
    "en": "en",
    "eng": "en",
    "english": "en",
    "zh": "zh",
    "cmn": "zh",
    "zho": "zh",
    "chinese": "zh",
    "mandarin": "zh",
    "yue": "yue",
    "cantonese": "yue",
    "ja": "ja",
    "jpn": "ja",
    "japanese": "ja",
    "ko": "ko",
    "kor": "ko",
    "korean": "ko",
}


@dataclass(frozen=True)
class TranscriptionParams:
    model: str
    language: str  # a SenseVoice hint: auto zh en yue ja ko
    response_format: ResponseFormat
    granularities: tuple[Granularity, ...]
    stream: bool
    keyterms: tuple[str, ...] = ()

    @property
    def metric_format(self) -> str:
        return "sse" if self.stream else self.response_format


def language_hint(value: str | None, default: str) -> str:
    """``en``, ``en-US``, ``eng`` or ``english`` -> ``en``; an empty value -> ``default``;
    a language SenseVoice does not know -> ``auto`` (it still detects and transcribes)."""
    if value is None or not value.strip():
        return default
    primary = value.strip().lower().replace("_", "-").split("-")[0]
    return LANGUAGE_HINTS.get(primary, "auto")


def parse_params(fields: Mapping[str, Sequence[str]], default_language: str) -> TranscriptionParams:
    """``fields``: each form field's values (``timestamp_granularities[]`` repeats)."""

    def one(name: str) -> str | None:
        values = fields.get(name) or []
        return values[-1] if values else None

    model = (one("model") or "").strip()
    if not model:
        raise invalid_request("you must provide a model parameter", param="model")
    response_format = (one("response_format") or "json").strip()
    if response_format not in get_args(ResponseFormat):
        raise invalid_request(
            f"response_format must be one of {', '.join(get_args(ResponseFormat))}", param="response_format"
        )
    granularities: list[Granularity] = []
    for value in [*fields.get("timestamp_granularities[]", []), *fields.get("timestamp_granularities", [])]:
        if value not in get_args(Granularity):
            raise invalid_request(
                "timestamp_granularities[] must be 'word' or 'segment'", param="timestamp_granularities"
            )
        if value not in granularities:
            granularities.append(cast(Granularity, value))
    stream_value = (one("stream") or "false").strip().lower()
    if stream_value not in ("true", "false", "1", "0"):
        raise invalid_request("stream must be true or false", param="stream")
    stream = stream_value in ("true", "1")
    if stream and response_format not in STREAM_FORMATS:
        raise invalid_request(
            f"stream=true returns text deltas: response_format must be {' or '.join(STREAM_FORMATS)}",
            param="response_format",
        )
    keyterms = [*fields.get("keyterms", []), *fields.get("keyterms[]", [])]
    if keyterms:
        if len(keyterms) > MAX_KEYTERMS:
            raise invalid_request(f"at most {MAX_KEYTERMS} keyterms", param="keyterms")
        for term in keyterms:
            if not term.strip() or len(term.strip()) > MAX_KEYTERM_CHARS:
                raise invalid_request(
                    f"each keyterm is 1 to {MAX_KEYTERM_CHARS} characters", param="keyterms"
                )
        terms = tuple(t.strip() for t in keyterms)
    else:
        terms = keyterms_from_prompt(one("prompt") or "")
    return TranscriptionParams(
        keyterms=terms,
        model=model,
        language=language_hint(one("language"), default_language),
        response_format=cast(ResponseFormat, response_format),
        # OpenAI's default is segment-level timestamps; the field only matters for verbose_json.
        granularities=tuple(granularities) or ("segment",),
        stream=stream,
    )
